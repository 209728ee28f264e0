"""The dashboard speaks Chinese (zh-CN) and English.

The language comes from the ``lang`` cookie (the switch in the header), else
from the browser's Accept-Language, else English. Unit, route, team and agent
names are never translated: they are shown as the plan writes them.
"""

from __future__ import annotations

from typing import Any

LANG_COOKIE = "gp_lang"
LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
MAX_ACCEPT_LANGUAGE_CHARS = 1024

_ZH: dict[str, str] = {
    "Gridpatrol": "网格巡防",
    "Control room": "指挥中心",
    "Alarms": "告警",
    "Agents": "终端",
    "Units": "单位",
    "Events": "事件",
    "Report": "报表",
    "Log out": "退出",
    "Log in": "登录",
    "Name": "用户名",
    "Password": "密码",
    "Wrong name or password.": "用户名或密码错误。",
    "Too many failed logins; try again in {s} s.": "登录失败次数过多，请 {s} 秒后再试。",
    "Busy; try again in a few seconds.": "系统繁忙，请几秒后再试。",
    "Active alarms": "未处理告警",
    "No active alarms.": "当前没有未处理的告警。",
    "Recent alarms": "近期告警",
    "Acknowledge": "确认",
    "Acknowledged by {who} at {when}": "{who} 于 {when} 确认",
    "Raised": "发生时间",
    "Escalation": "升级记录",
    "not escalated": "未升级",
    "escalated to {unit}": "已升级至 {unit}",
    "NEW ALARM": "新告警",
    "new alarm": "新告警",
    "Sound on": "声音已开",
    "Sound off": "声音已关",
    "Enable sound": "开启声音",
    "Silence 5 min": "静音 5 分钟",
    "live": "实时",
    "reconnecting": "重新连接中",
    "Agent": "终端",
    "State": "状态",
    "Unit": "单位",
    "Last seen": "最后在线",
    "Outbox": "待发队列",
    "Clock": "时钟",
    "Reconnects": "重连次数",
    "Quarantine": "隔离区",
    "Messages central could not store, kept as they came. Each raised a suspicious alarm and was acknowledged past, so no agent waits on it.": "中心无法存储的消息，原样保留。每条都已触发可疑告警并被确认跳过，不会阻塞任何终端。",
    "Reason": "原因",
    "Received": "接收时间",
    "synced": "已同步",
    "not synced": "未同步",
    "online": "在线",
    "offline": "离线",
    "disconnected": "断开",
    "unknown": "未知",
    "active": "未处理",
    "acknowledged": "已确认",
    "resolved": "已恢复",
    "alarm": "入侵告警",
    "restore": "恢复",
    "tamper": "防拆",
    "panic": "紧急求助",
    "scan": "巡更打卡",
    "fault": "故障",
    "output": "输出",
    "agent-offline": "终端离线",
    "not in plan": "未在计划中",
    "{n} offline": "{n} 个离线",
    "{n} online": "{n} 个在线",
    "Tonight": "今晚",
    "Completion": "完成率",
    "Rolled up": "汇总",
    "Own routes": "本级路线",
    "Rounds": "轮次",
    "Routes": "路线",
    "complete": "完成",
    "late": "迟到",
    "incomplete": "未完成",
    "missed": "漏巡",
    "open": "进行中",
    "district": "区",
    "street": "街道",
    "community": "社区",
    "grid": "网格",
    "Tier": "层级",
    "Date": "日期",
    "Show": "显示",
    "Download CSV": "下载 CSV",
    "Daily completion report": "每日巡更完成报表",
    "Completion over the last {n} days": "最近 {n} 天完成率",
    "mean over units of each tier": "各层级单位的平均值",
    "Slot": "时段",
    "Status": "状态",
    "Scanned": "已打卡",
    "Missing": "缺失",
    "out of order": "顺序错误",
    "Checkpoint": "巡更点",
    "Kind": "类型",
    "Source": "来源",
    "Time": "时间",
    "replayed": "补发",
    "Details": "详情",
    "Filter": "筛选",
    "any": "全部",
    "Since": "起始",
    "Until": "截止",
    "No events match.": "没有符合条件的事件。",
    "No rounds scheduled.": "没有计划的轮次。",
    "No plan imported yet.": "尚未导入巡更计划。",
    "Scope": "范围",
    "Live scans": "实时打卡",
    "Round timeline": "巡更时间线",
    "Teams": "队伍",
    "Order": "顺序",
    "Window": "时段窗口",
    "every {n} min": "每 {n} 分钟",
    "tolerance {n} min": "容差 {n} 分钟",
    "Language": "语言",
    "{n} active": "{n} 条未处理",
    "Not found.": "未找到。",
    "Page {n}": "第 {n} 页",
    "Older": "更早",
    "rounds": "轮",
    "All": "全部",
    "{n} s ago": "{n} 秒前",
    "{n} min ago": "{n} 分钟前",
    "{n} h ago": "{n} 小时前",
    "{n} d ago": "{n} 天前",
    "raise": "发生",
    "escalate": "升级",
    "ack": "确认",
    "restore-step": "恢复",
    "retrip": "再次触发",
    "resolve": "解除",
    "None.": "无。",
    "order-strict": "严格按顺序",
    "order-start-then-any": "先起点，其余任意",
    "order-any": "任意顺序",
    "agent-flapping": "终端频繁掉线",
    "suspicious": "可疑报文",
    "no data": "无数据",
    # issue 14: notifications and snapshots
    "notify-sent": "已通知",
    "notify-failed": "通知失败",
    "Snapshots": "抓拍",
    "Snapshot {n}": "抓拍 {n}",
    "Video stream": "视频流",
    "Camera {id}": "摄像机 {id}",
    "kind-panic": "紧急求助",
    "kind-alarm": "入侵告警",
    "kind-tamper": "防拆告警",
    "kind-agent-offline": "终端离线",
    "kind-agent-flapping": "终端频繁掉线",
    "kind-suspicious": "可疑报文",
    "Unknown kind: {kind}": "未知类型：{kind}",
    "Sent late by the agent from its outbox: it happened while the link was down.": "终端在断线期间发生、事后从待发队列补发。",
    "Users": "用户",
    "Only an administrator (a user of the plan's top unit) may manage accounts.": "只有管理员（计划顶级单位的用户）可以管理账号。",
    "You cannot do that to your own account.": "不能对自己的账号执行此操作。",
    "Done.": "已完成。",
    "Actions": "操作",
    "you": "本人",
    "disabled": "已停用",
    "enabled": "已启用",
    "Enable": "启用",
    "Disable": "停用",
    "Remove": "删除",
    "New password": "新密码",
    "Set password": "设置密码",
    "Cards": "卡片",
    "Unknown cards": "未登记的卡",
    "Cards seen at checkpoints in the last {days} days that no member holds.": "近 {days} 天在巡更点刷过、但不属于任何队员的卡。",
    "No unknown cards.": "没有未登记的卡。",
    "Tag": "卡号（读卡器）",
    "Printed": "卡面号码",
    "Checkpoints": "巡更点",
    "Scans": "刷卡次数",
    "Plan line": "计划条目",
    "Our rounds": "本队巡逻",
    "Tonight's rounds": "今晚的巡逻",
    "now": "进行中",
    "to walk": "待巡",
    "No rounds tonight.": "今晚没有巡逻。",
}

_EN: dict[str, str] = {
    "order-strict": "strict, in the listed order",
    "order-start-then-any": "start first, then any order",
    "order-any": "any order",
    "restore-step": "restore",
    "notify-sent": "notified",
    "notify-failed": "notify failed",
    # Alarm kinds as people say them; the raw names (agent-offline) are for machines.
    "kind-panic": "Panic button",
    "kind-alarm": "Intrusion",
    "kind-tamper": "Tamper alarm",
    "kind-agent-offline": "Agent offline",
    "kind-agent-flapping": "Agent flapping",
    "kind-suspicious": "Suspicious message",
}

CATALOGS: dict[str, dict[str, str]] = {"en": _EN, "zh-CN": _ZH}

# Strings the browser script needs, shipped once per page as JSON.
JS_KEYS = (
    "Acknowledge", "Acknowledged by {who} at {when}", "NEW ALARM", "new alarm", "Sound on", "Sound off",
    "Enable sound", "live", "reconnecting", "online", "offline", "disconnected", "unknown", "active",
    "acknowledged", "resolved", "alarm", "restore", "tamper", "panic", "scan", "fault", "output",
    "agent-offline", "agent-flapping", "suspicious", "escalated to {unit}", "not escalated", "No active alarms.", "{n} active", "Silence 5 min",
    "synced", "not synced", "{n} s ago", "{n} min ago", "{n} h ago", "{n} d ago",
    "kind-panic", "kind-alarm", "kind-tamper", "kind-agent-offline", "kind-agent-flapping", "kind-suspicious",
    "Unknown kind: {kind}",
)


def parse_accept_language(header: str | None) -> list[str]:
    """Language tags by preference (q-value, then order); garbage is skipped, never raised."""
    if not header:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:MAX_ACCEPT_LANGUAGE_CHARS].split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or len(tag) > 35 or not all(c.isalnum() or c in "-_*" for c in tag):
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
            if not 0.0 <= q <= 1.0:  # also drops nan
                continue
        if q > 0:
            ranked.append((-q, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def match_language(tag: str) -> str | None:
    primary = tag.replace("_", "-").split("-")[0].lower()
    if primary == "zh":
        # Traditional-script readers (zh-TW, zh-Hant) still read simplified
        # better than English; the plan's names are in simplified script anyway.
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def negotiate(accept_language: str | None, cookie: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for tag in parse_accept_language(accept_language):
        lang = match_language(tag)
        if lang:
            return lang
    return DEFAULT_LANGUAGE


class Translator:
    """``t("{n} offline", n=3)``: the catalog's text, else the key itself (English)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in CATALOGS else DEFAULT_LANGUAGE
        self._catalog = CATALOGS[self.lang]

    def __call__(self, key: str, **values: Any) -> str:
        text = self._catalog.get(key, key)
        return text.format(**values) if values else text

    def js_catalog(self) -> dict[str, str]:
        return {key: self._catalog.get(key, key) for key in JS_KEYS}
