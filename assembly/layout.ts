// Group layout, port records, ring/tree/dissemination schedules and chunking.
