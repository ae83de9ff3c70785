"""MMagic's ReduceLR scheduler under weights-only checkpoint loading."""
from types import ModuleType


def fix_reduce_lr(module: ModuleType) -> None:
    """Leaves ReduceLR's message hub out of its state dict.

    ``ReduceLR.state_dict`` (MMEngine's default: every attribute but the
    optimizer) holds its ``MessageHub``, a logger object with arbitrary
    runtime info, so every checkpoint of a config using it fails to load
    with ``weights_only=True`` (torch >= 2.6's default) and ``--resume``
    is impossible. The hub is a named global instance (``'reduce_lr'``)
    that the scheduler finds again at construction, so the state loses
    nothing; ``load_state_dict`` keeps the current hub.
    """
    reduce_lr = module.ReduceLR
    if getattr(reduce_lr.state_dict, 'without_message_hub', False):
        return
    state_dict = reduce_lr.state_dict

    def without_message_hub(self) -> dict:
        state = state_dict(self)
        state.pop('message_hub', None)
        return state

    without_message_hub.without_message_hub = True
    reduce_lr.state_dict = without_message_hub
