"""gridrl.integrations"""
