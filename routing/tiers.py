"""The tiers a provider belongs to (SPEC §3): the one place their names are spelled.

A policy orders tiers; the chain takes routes tier by tier in that order. Pure constants: import them anywhere.
"""

FREE = "free"
INTERNAL = "internal"
PREMIUM = "premium"
TIERS = (FREE, INTERNAL, PREMIUM)
