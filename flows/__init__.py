"""The `alexnet` command and the Prefect flows that wire the stages together."""
