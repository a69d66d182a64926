"""Management commands of `mailbridge.django`."""
