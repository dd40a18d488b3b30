"""A model's life after training, on MLflow: the tracked run, registered versions, the production
alias and its history, promotion by a paired bootstrap. MLflow is imported only here."""
