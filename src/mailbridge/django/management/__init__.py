"""Management commands of `mailbridge.django`."""

__all__: list[str] = []
