"""The `telebridge` command: argument parsing and one function per sub-command.

The outermost edge: it may import every other folder; nothing imports it.
"""
