"""Files on the network: placing shards on holders, and finding and fetching them back."""
