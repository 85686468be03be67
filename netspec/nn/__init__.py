"""The layer vocabulary: `layers/` (one file per type), parameter initialisers, losses,
optimizers and learning-rate schedules."""
