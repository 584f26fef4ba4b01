"""gridrl.forecast"""
