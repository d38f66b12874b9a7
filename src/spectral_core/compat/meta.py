"""Rules about files, markers, baselines and the deploy manifest (not about one statement).

Their examples are file situations rather than SQL to lint, except for the marker rules.
"""

from __future__ import annotations

from spectral_core.compat.registry import Gate, rule

__all__: list[str] = []

_N = Gate.NONE


@rule("syntax-error", _N, blocking=True)
class SyntaxErrorRule:
    """The file does not parse.

    Bad:
        ALTER TABLE core.outbox DROP COLUMN;
    Good:
        ALTER TABLE core.outbox DROP COLUMN IF EXISTS scratch;
    """


@rule("marker-invalid", _N, blocking=True)
class MarkerInvalid:
    """A near-miss marker: it waives nothing.

    Bad:
        -- compat: breaking (reason: TODO)
    Good:
        -- compat: breaking (reason: nothing has read core.old_events since v0.3; ADR 0009)
    """


@rule("marker-unused", Gate.COMPAT, blocking=False)
class MarkerUnused:
    """A marker in a file with nothing to waive.

    Bad:
        -- compat: breaking (reason: dropping the old table)
        SELECT 1;
    Good:
        SELECT 1;
    """


@rule("edited-migration", _N, blocking=True)
class EditedMigration:
    """A deployed migration file was edited.

    Bad:
        a comment added to 0003_x.sql after 0003 was released
    Good:
        a new 0007_fix_x.sql with the change
    """


@rule("deleted-migration", _N, blocking=True)
class DeletedMigration:
    """A deployed migration file was deleted or renamed.

    Bad:
        git mv 0003_x.sql 0003_better_name.sql after 0003 was released
    Good:
        deployed files stay as they are
    """


@rule("out-of-order", _N, blocking=True)
class OutOfOrder:
    """A new migration numbered below a deployed one.

    Bad:
        a new 0004_y.sql while 0005 is deployed
    Good:
        the new file renumbered 0006_y.sql
    """


@rule("replay-failed", _N, blocking=False)
class ReplayFailed:
    """A deployed migration could not be replayed.

    Bad:
        a deployed file that pglast cannot parse: its objects are unknown to the lint
    Good:
        deployed files that parse
    """


@rule("manifest-unmapped", _N, blocking=True)
class ManifestUnmapped:
    """A directory has no deploy target.

    Bad:
        src/spectral_new/ exists, deploy/manifest.toml does not name it
    Good:
        "src/spectral_new" = "app" under [paths]
    """


@rule("manifest-stale", _N, blocking=True)
class ManifestStale:
    """A manifest entry names a directory that does not exist.

    Bad:
        "src/spectral_gone" = "app" after the directory was removed
    Good:
        the entry removed with the directory
    """


@rule("manifest-unknown-target", _N, blocking=True)
class ManifestUnknownTarget:
    """A mapping names a target not declared.

    Bad:
        "src/spectral_api" = "ap" with only [targets.app] declared
    Good:
        "src/spectral_api" = "app"
    """


@rule("manifest-conflict", _N, blocking=True)
class ManifestConflict:
    """A directory is both mapped and non_deployed.

    Bad:
        "src/tools" under [paths] and in non_deployed
    Good:
        one of the two
    """


@rule("manifest-invalid", _N, blocking=True)
class ManifestInvalid:
    """The manifest is malformed.

    Bad:
        roots = "src"
    Good:
        roots = ["src", "apps"]
    """
