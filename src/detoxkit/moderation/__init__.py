"""`detoxkit moderate`: score conversations message by message with one or more scorers, and
measure them as content moderators against reference labels (docs/moderation.md)."""
