"""The plugin framework: hook specifications, the plugin manager and the stream and target bases."""
