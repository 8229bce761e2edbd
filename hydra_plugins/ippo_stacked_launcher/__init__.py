"""ippo's `launcher=stacked` Hydra launcher (see ippo_cli.stacking)."""
