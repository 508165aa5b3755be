"""The estate: inventory-driven renewal across many devices, with a state store.

Modules: :mod:`.store` (SQLite history, versions, backups, audit, lock),
:mod:`.csr` (keys and CSRs for inventory certificates), :mod:`.importer`
(issued files to a stored version), :mod:`.devices` (inventory device to
driver), :mod:`.plan`, :mod:`.deploy`, :mod:`.status`.
"""
