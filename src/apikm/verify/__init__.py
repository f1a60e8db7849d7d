"""The hot path: is this key good, and who stands behind it?"""
