"""Training, evaluation and publishing of the package's sentence encoders: recipes, trainers, losses, data, evaluators,
`evaluate` metric modules, model cards and Hub upload. Nothing here ships inside a Hub model repository."""
