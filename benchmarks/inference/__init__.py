"""The inference benchmark: chatbus over Kafka against the model's ceiling and a peer server.

``python -m benchmarks.inference`` (``make bench``) drives three systems with the same model,
prompts and concurrency levels and writes ``.chatbus/bench/inference.json``:

- ``ceiling``: :class:`TransformersEngine` in-process, no bus (``ceiling.py``);
- ``peer``: ``transformers serve --continuous-batching`` over its OpenAI API (``peer.py``);
- ``chatbus``: a ``chatbus worker`` process fed through Kafka by ``ChatClient`` (``bus.py``).

The statistics (``stats.py``) and target checks (``targets.py``) are pure and unit-tested.
"""
