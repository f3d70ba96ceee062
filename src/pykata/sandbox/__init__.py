"""The sandbox lifecycle: plan, launch, connect, containers, tear down."""
