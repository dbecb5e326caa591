"""The ``broker`` command: one sub-command group per job an operator or support officer does.

Each command imports what it needs when it runs, so ``broker --help`` answers at once. Long work shows progress;
every command prints one clear line, never a traceback, when the store or RabbitMQ cannot be reached.
"""
