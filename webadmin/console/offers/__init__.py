"""The offer and product catalog (the Nibs seed), with the Push Offer action."""
