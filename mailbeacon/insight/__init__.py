"""What the numbers say: stats, tags, contacts, engagement scores, retention."""
