"""rewardflow: the command line that ties the contract, the services and the trainer together."""
