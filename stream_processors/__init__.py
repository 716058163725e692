"""The stream processors: the Faust app (input and output moderation, the history agent that
records turns into :mod:`chatbus.history`) and the archiver.

Requests flow ``chat.requests`` → moderation → ``chat.requests.approved`` → the inference workers.
"""
