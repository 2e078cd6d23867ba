"""Publishing the change log beyond the host (issue 7): the relay core and its stream targets.

``relay`` is the core (store -> target, exactly once, in seq order); ``ports`` says what a target
must offer; ``redis_target`` is the Redis Streams adapter. The daemon wires them
(``daemon_publish``).
"""
