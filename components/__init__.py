"""ComponentResources of the Memos deployment, one per file."""
