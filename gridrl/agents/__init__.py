"""gridrl.agents"""
