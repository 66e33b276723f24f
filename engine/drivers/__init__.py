"""Driver contracts (graph, network, exec) and their discovery through stevedore."""
