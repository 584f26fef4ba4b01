"""gridrl.experiments"""
