"""gridrl.env"""
