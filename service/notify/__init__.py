"""Telling the patient (and their apps) that something arrived: events, the dispatcher
that delivers them, and the channels (inbox, e-mail, subscriptions, the portal's stream)."""
