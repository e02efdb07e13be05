"""Azure ML scoring scripts: ``online_score.py`` (online endpoints) and ``batch_score.py`` (batch endpoints)."""
