"""The base of every config section: camelCase aliases, frozen, unknown keys kept (and warned
about by `services.config.unknown_keys`)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
