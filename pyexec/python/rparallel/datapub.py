"""rparallel.datapub: live data from a running task to its client.

On an engine, ``publish_data({'step': i, 'loss': x})`` sends the dict at
once; in the client, ``ar.data`` is every dict published so far merged
(later keys win), while the task still runs (ipyparallel's
``ipyparallel.datapub``)."""

__all__ = ["publish_data"]


def publish_data(data):
    """Publishes ``data`` (a dict of picklable values) as the current
    task's live data."""
    if not isinstance(data, dict):
        raise TypeError("publish_data takes a dict, not %s" % type(data).__name__)
    import _rparallel_exec
    from rparallel_serialize import serialize
    shell = _rparallel_exec._the_shell
    if shell is None:
        raise RuntimeError("publish_data runs on an engine, in a task")
    frames = [bytes(f) for f in serialize(data)]
    shell.hooks.message("data_message", "{}", "{}", frames)
