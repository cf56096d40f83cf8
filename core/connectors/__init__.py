"""What connectors to other systems share: HTTP calls and declarative field mappings."""
