"""The wizard's screens, one module per step, plus the small dialogs they share."""
