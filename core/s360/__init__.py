"""Talking to S-360: the API client, the shared call budget, S-360's date-times."""
