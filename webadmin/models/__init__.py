"""All models, imported here so Alembic and create_all see every table."""

from webadmin.models.analytics import CampaignHourlyRollup, CampaignRollup, HourlyRollup
from webadmin.models.app import ApiKey, App
from webadmin.models.audience import Device, Group, GroupMember, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import AppSendState, Campaign, CampaignAppSend, CampaignStatus, Channel
from webadmin.models.demo import DemoLoad
from webadmin.models.message import Message, MessageRelatedObject, MessageState, Template
from webadmin.models.offer import Offer
from webadmin.models.setting import Setting
from webadmin.models.sms import SmsChannel, SmsMessage, SmsState
from webadmin.models.user import LoginAttempt, Role, StaffSession, User

__all__ = [
    "ApiKey",
    "App",
    "AppSendState",
    "AuditEvent",
    "Campaign",
    "CampaignAppSend",
    "CampaignHourlyRollup",
    "CampaignRollup",
    "CampaignStatus",
    "Channel",
    "DemoLoad",
    "Message",
    "MessageRelatedObject",
    "MessageState",
    "Offer",
    "Template",
    "Device",
    "Group",
    "GroupMember",
    "HourlyRollup",
    "LoginAttempt",
    "Role",
    "Setting",
    "SmsChannel",
    "SmsMessage",
    "SmsState",
    "StaffSession",
    "Subscriber",
    "User",
]
