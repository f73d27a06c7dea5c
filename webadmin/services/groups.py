"""Groups of subscribers: create, rename, describe and delete them (audited), and member lists awaiting a confirm."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select

from webadmin.extensions import db
from webadmin.models.audience import Group, GroupMember, PendingMemberList, Subscriber
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit
from webadmin.services.audience import KEY_CHUNK, match_keys, normalize_keys

NAME_MAX_LENGTH = 120
DESCRIPTION_MAX_LENGTH = 500
PENDING_TTL = timedelta(hours=1)  # an unconfirmed preview is forgotten after an hour
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass
class GroupRow:
    """A group with its number of members, for the list."""

    group: Group
    members: int


@dataclass
class MemberPreview:
    """What adding a pasted or uploaded list would do, before anything is written."""

    token: str  # names the stashed list; the confirm form sends it back
    total: int  # distinct keys after normalising
    found: int
    already: int  # found keys that are members already
    unknown: list[str]

    @property
    def to_add(self) -> int:
        """Subscribers the confirm will add."""
        return self.found - self.already


def list_groups() -> list[GroupRow]:
    """Every group by name, with member counts (one grouped count over the membership index)."""
    counts = dict(db.session.execute(select(GroupMember.group_id, func.count()).group_by(GroupMember.group_id)).all())
    groups = db.session.scalars(select(Group).order_by(Group.name))
    return [GroupRow(group, counts.get(group.id, 0)) for group in groups]


def get_group(group_id: int) -> Group | None:
    """The group with this id, if any."""
    return db.session.get(Group, group_id) if 0 < group_id <= 2**31 - 1 else None


def member_count(group: Group) -> int:
    """How many subscribers are in the group."""
    return db.session.scalar(select(func.count()).where(GroupMember.group_id == group.id)) or 0


def _clean(name: str, description: str | None) -> tuple[str, str | None]:
    """A trimmed name (required, unique ignoring case is checked separately) and an optional description."""
    name = " ".join((name or "").split())
    if not name:
        raise ServiceError("Give the group a name.", field="name")
    if len(name) > NAME_MAX_LENGTH:
        raise ServiceError(f"A group name has at most {NAME_MAX_LENGTH} characters.", field="name")
    description = (description or "").strip() or None
    if description and len(description) > DESCRIPTION_MAX_LENGTH:
        raise ServiceError(f"A description has at most {DESCRIPTION_MAX_LENGTH} characters.", field="description")
    return name, description


def _check_name_free(name: str, group_id: int | None = None) -> None:
    """Refuse a name another group has, ignoring case ("VIP" and "vip" would be confusing)."""
    query = select(Group.id).where(func.lower(Group.name) == name.lower())
    if group_id is not None:
        query = query.where(Group.id != group_id)
    if db.session.scalar(query) is not None:
        raise ServiceError(f"A group named {name!r} exists already.", field="name", code="conflict")


def create_group(name: str, description: str | None, *, actor: User | str | None) -> Group:
    """Add a group (the caller commits)."""
    name, description = _clean(name, description)
    _check_name_free(name)
    group = Group(name=name, description=description)
    db.session.add(group)
    db.session.flush()
    audit.record("group.create", actor=actor, obj=("group", group.id), name=name)
    return group


def update_group(group: Group, name: str, description: str | None, *, actor: User | str | None) -> Group:
    """Rename and/or describe a group (the caller commits)."""
    name, description = _clean(name, description)
    _check_name_free(name, group.id)
    changes = {}
    if name != group.name:
        changes.update(old_name=group.name, name=name)
    if description != group.description:
        changes["description"] = "changed"
    group.name, group.description = name, description
    audit.record("group.update", actor=actor, obj=("group", group.id), **changes)
    return group


def delete_group(group: Group, *, actor: User | str | None) -> int:
    """Delete a group and its memberships (not the subscribers); returns how many members it had."""
    members = db.session.execute(delete(GroupMember).where(GroupMember.group_id == group.id)).rowcount or 0
    audit.record("group.delete", actor=actor, obj=("group", group.id), name=group.name, members=members)
    db.session.delete(group)
    return members


def group_ids_by_name(names: Iterable[str], *, actor: User | str | None) -> tuple[dict[str, int], list[str]]:
    """Ids of groups by lowercased name, creating the missing ones; returns (ids, names created)."""
    wanted = {name.lower(): name for name in names}
    ids = {
        name.lower(): gid
        for gid, name in db.session.execute(select(Group.id, Group.name).where(func.lower(Group.name).in_(wanted)))
    }
    created = []
    for lowered, name in wanted.items():
        if lowered not in ids:
            ids[lowered] = create_group(name, None, actor=actor).id
            created.append(name)
    return ids, created


def _already_members(group: Group, keys: list[str]) -> int:
    """How many of these (existing) keys are members of the group, counted in chunks."""
    total = 0
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK]
        # Ids first, then the (group_id, subscriber_id) primary key: a join would walk the whole group per chunk.
        ids = select(Subscriber.id).where(Subscriber.subscriber_key.in_(chunk))
        members = select(func.count()).where(GroupMember.group_id == group.id, GroupMember.subscriber_id.in_(ids))
        total += db.session.scalar(members) or 0
    return total


def _token_hash(token: str) -> str:
    """The stored name of a pending list: a leaked database row cannot be confirmed by someone else."""
    return hashlib.sha256(token.encode()).hexdigest()


def _forget_stale_previews() -> None:
    """Drop previews nobody confirmed within PENDING_TTL."""
    db.session.execute(delete(PendingMemberList).where(PendingMemberList.created_at < utcnow() - PENDING_TTL))


def preview_members(group: Group, raw_keys: Iterable[str], *, owner: User) -> MemberPreview:
    """Match a list of keys without writing anything, and stash it for the confirm (a random token names it)."""
    keys = normalize_keys(raw_keys)
    if not keys:
        raise ServiceError("No subscriber keys found: paste one per line or upload a CSV file.", field="keys")
    match = match_keys(keys)
    token = secrets.token_urlsafe(16)
    _forget_stale_previews()
    db.session.add(PendingMemberList(token_hash=_token_hash(token), group_id=group.id, owner_id=owner.id, keys=keys))
    db.session.commit()
    return MemberPreview(token, len(keys), len(match.found), _already_members(group, match.found), match.unknown)


def take_pending_members(token: str, *, group: Group, owner: User) -> list[str] | None:
    """The stashed keys of a preview made by this user for this group, removed from the stash; None if gone.

    One DELETE … RETURNING takes the row, so two confirms of one preview cannot both get its keys."""
    if not _TOKEN.fullmatch(token or ""):
        return None
    taken = db.session.execute(
        delete(PendingMemberList)
        .where(PendingMemberList.token_hash == _token_hash(token), PendingMemberList.group_id == group.id,
               PendingMemberList.owner_id == owner.id, PendingMemberList.created_at >= utcnow() - PENDING_TTL)
        .returning(PendingMemberList.keys)
    ).scalar()
    return None if taken is None else list(taken)
