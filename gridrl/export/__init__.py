"""gridrl.export"""
