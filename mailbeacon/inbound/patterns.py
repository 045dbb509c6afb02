"""Diagnostic-text patterns -> bounce reason, as one ordered table.

Order matters: the first matching row wins, so narrow phrases (DMARC, RBL names, "sender
address rejected") come before the broad ones ("rejected", "blocked", "unavailable"). Rows
hold reason words rather than `Reason` members so this table has no import cycle with
`reasons.py`; a test checks every word is a `Reason`. Texts are matched case-insensitively
after whitespace is collapsed to single spaces.
"""

from __future__ import annotations

import re


def _any(*alternatives: str) -> re.Pattern[str]:
    """One case-insensitive regex matching any of the alternatives."""
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


# Wordings of "no such mailbox" that the receiving system writes itself (not a reply to an
# SMTP command), so they count even when the bounce does not say which command failed.
DEFINITE_USER_UNKNOWN = _any(
    r"recipient name is not recognized", r"not listed in (?:the )?(?:public name|domino "
    r"directory|name & address book|address book)", r"invalid (?:final delivery )?userid",
    r"no mailbox here by that name", r"the email account that you tried to reach does not exist",
    r"address couldn't be found", r"unknown user:", r"no valid recipients for this",
    r"recipientnotfound", r"does not like recipient", r"recipient address rejected: access denied",
    r"unknown recipient", r"this user doesn't have an? [\w.-]+ account",
    r"please check if (?:the )?address is correct",
)

TEXT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # A local delivery program failed: its messages quote "no such user" from the shell.
    ("mailererror", _any(r"\bprocmail\b", r"x-unix;", r"pipe to \|", r"command died")),
    ("virusdetected", _any(
        r"\bvirus", r"malware", r"\binfected\b", r"trojan", r"phishing",
        r"dangerous (?:attachment|content)",
    )),
    ("authfailure", _any(
        r"\bdmarc\b", r"\bspf\b.{0,40}\b(?:fail|reject|invalid|error)", r"sender policy framework",
        r"\bdkim\b.{0,40}\b(?:fail|invalid|reject|error)", r"unauthenticated (?:e-?mail|mail|message)",
        r"(?:does not|doesn't|did not) pass (?:dmarc|spf|dkim)", r"not (?:designate|permitted sender)",
        r"authentication (?:check|checks) (?:failed|fail)", r"sender (?:is )?not authenticated",
    )),
    ("requireptr", _any(
        r"reverse (?:dns|lookup|hostname|host name|address|ip)", r"\bno (?:ptr|rdns|reverse)",
        r"\bptr (?:record|lookup)", r"cannot find your (?:reverse )?host ?name",
        r"(?:ip|client) (?:name )?lookup failed", r"does not have (?:a )?ptr",
        r"rdns (?:lookup|check|failed|required)", r"hostname (?:does not|doesn't) match",
        r"unresolvable (?:ip|address|client)", r"\bdns ptr\b", r"invalid rdns", r"\brdns record",
    )),
    ("badreputation", _any(
        r"(?:poor|bad|low|negative) (?:ip |sender |sending |domain )?reputation",
        r"reputation (?:of|is too|too low)", r"sender ?score",
    )),
    ("blocked", _any(
        r"\b(?:spamhaus|spamcop|sorbs|barracudacentral|dnsbl|rbl|uceprotect|abuseat|mailspike|"
        r"blocklist\.de|psbl|surbl|senderbase)\b",
        r"black ?list(?:ed)?", r"block ?list(?:ed)?",
        r"listed (?:in|on|at|by) (?:an? |the )?(?:\w+ )?(?:rbl|dnsbl|blacklist|blocklist|realtime)",
        r"(?:ip|address|host|network|client|connection|server) .{0,40}(?:is |has been |was )?"
        r"(?:blocked|banned|block listed|blacklisted|refused)",
        r"(?:dynamic|dial-?up|residential|consumer|broadband) (?:ip|address|range|pool|host)",
        r"use the smtp server of your isp", r"\bpolicy ?block",
    )),
    ("failedstarttls", _any(
        r"starttls", r"\btls (?:is )?required", r"must (?:use|issue) (?:a )?(?:starttls|tls)",
        r"tls (?:handshake|negotiation) failed", r"encryption (?:is )?required",
    )),
    ("norelaying", _any(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited|refused)",
        r"(?:unable|not allowed|not permitted|cannot|can't) (?:to )?relay", r"we do not relay",
        r"\bno relaying\b", r"relaying (?:mail )?(?:to .{1,80} )?(?:is )?(?:denied|not allowed)",
        r"not a (?:valid )?gateway", r"open relay", r"relay not permitted",
    )),
    ("rejected", _any(
        r"sender (?:address )?(?:rejected|refused|denied|blocked|invalid|unknown)",
        r"(?:sender|from) (?:address |domain )?(?:does not|doesn't) exist",
        r"domain of sender address", r"sender (?:domain|address) (?:not found|is invalid|unknown)",
        r"(?:invalid|unknown|bad|unverified|unroutable|unresolvable) sender",
        r"sender verif(?:y|ication) (?:failed|is required)", r"mail from .{0,80} (?:rejected|refused)",
        r"envelope[- ](?:sender|from) .{0,40}(?:rejected|refused|invalid|not allowed)",
        r"(?:rejected|refused|not accepting mail) from (?:this )?sender", r"sender .{0,30}not allowed",
        r"your (?:e-?mail )?address has been (?:blocked|rejected)", r"bad sender'?s? (?:mailbox|system)",
        r"return.?path .{0,40}(?:invalid|not exist)", r"from:? domain is invalid",
        r"provide a valid from", r"(?:are|is) not (?:a )?member", r"not a member of",
    )),
    ("mailboxfull", _any(
        r"mail ?box(?: is|'s)? (?:full|over ?quota|quota)", r"(?:mail ?folder|in ?box|mail ?drop) "
        r"(?:is )?full", r"over ?quota", r"quota (?:exceeded|exceed|full|violation|limit)",
        r"exceed(?:ed|s)? (?:the |his |her |their |its )?(?:mailbox|storage|disk|quota|allocated)",
        r"(?:mailbox|storage|disk|quota) (?:size )?(?:limit )?(?:has been |is )?exceeded",
        r"insufficient (?:disk|storage|space)", r"full mail ?box", r"mailbox (?:size|space) limit",
        r"not enough (?:storage|space|disk)", r"(?:user|recipient)(?:'s)? (?:mailbox|storage) "
        r"(?:is )?(?:full|exceeded)", r"would exceed (?:the )?(?:mailbox|quota|storage)",
        r"number of messages in (?:the )?recipient'?s? mailbox", r"mailbox (?:has )?exceeded",
        r"(?:storage|disk) (?:space )?(?:allocation|allocated) exceeded", r"maildir over",
        r"メールボックスが一杯", r"容量(?:オーバー|超過)",
    )),
    ("exceedlimit", _any(
        r"message (?:size )?exceeds (?:the )?(?:local |recipient'?s? )?limit",
        r"exceeds? (?:the )?(?:recipient'?s? )?message size limit",
    )),
    ("mesgtoobig", _any(
        r"message (?:is )?too (?:large|big|long)", r"message (?:size|length) (?:exceeds|too)",
        r"(?:size|length) limit (?:exceeded|reached)", r"exceeds? (?:the )?maximum (?:allowed )?"
        r"(?:message )?size", r"mail size (?:limit|too)", r"message (?:file )?too large",
        r"size of (?:the )?(?:message|mail) exceeds",
    )),
    ("hasmoved", _any(
        r"\bhas moved\b", r"address (?:has )?changed", r"(?:user|recipient) (?:has )?moved",
        r"no longer (?:at|with|on) this (?:domain|address)", r"new (?:e-?mail )?address is",
    )),
    ("suspend", _any(
        r"(?:account|mail ?box|user|recipient|address)(?: is| has been| was)? (?:temporarily )?"
        r"(?:disabled|suspended|deactivated|inactive|locked|frozen|blocked by administrator)",
        r"(?:disabled|suspended|deactivated|inactive|expired|closed|frozen) "
        r"(?:account|mail ?box|user|recipient|e-?mail address)",
        r"no longer (?:active|in use|valid|available)",
        r"account that you tried to reach is (?:disabled|inactive|suspended)", r"(?:account|mailbox) (?:has )?expired",
        r"account (?:has been )?(?:terminated|closed|discontinued)", r"not (?:an )?active (?:user|account)",
        r"mailbox (?:is )?(?:unavailable|not available) .{0,30}(?:inactive|disabled)",
    )),
    ("notaccept", _any(
        r"(?:does not|doesn't|do not) (?:accept|receive) (?:any )?(?:e-?mail|mail|messages)",
        r"null mx", r"not accepting (?:any )?(?:mail|network messages|messages)",
        r"accepts? no (?:e-?mail|mail)", r"mail (?:is )?not accepted", r"no smtp service",
        r"no mx (?:record )?found",
    )),
    ("userunknown", _any(
        r"user(?:name)? (?:is )?(?:unknown|not known|not found|not exist)", r"unknown (?:user|"
        r"recipient|local[- ]?part|mail ?box|address|account|e-?mail address|alias)",
        r"no such (?:user|mail ?box|recipient|address|account|local user|person|e-?mail)",
        r"(?:user|mail ?box|recipient|address|account|e-?mail|addressee)(?: address)? "
        r"(?:does not|doesn't|did not|not) exist",
        r"(?:recipient|user|address|mail ?box|addressee|account)(?: address)? "
        r"(?:is )?(?:unknown|not found|not valid|invalid|not recognized|not listed)",
        r"invalid (?:recipient|mail ?box|address|user|e-?mail address|account)",
        r"not a (?:valid|known) (?:mail ?box|recipient|user|address)",
        r"no (?:mail ?box|account|user) (?:here |by that name|for)", r"addressee unknown",
        r"(?:mail ?box|user|recipient) unavailable",
        r"mailbox not found", r"undeliverable address", r"recipient name is not recognized",
        r"is not a (?:known|valid) user", r"recipientnotfound", r"(?:doesn't|does not) have an? "
        r"[\w.-]+ account", r"not our customer", r"no valid recipients", r"unknown or illegal alias",
        r"bad destination (?:mail ?box|address)", r"user (?:doesn't|does not) (?:exist|have)",
        r"recipient address rejected(?:\.|: access denied)", r"(?<!recipient )address rejected\.",
        r"not listed in (?:the )?(?:public name|domino directory|name & address book)",
        r"invalid (?:final delivery )?userid", r"no valid recipients for this",
        r"please check if (?:the )?address is correct",
        r"(?:address|account|recipient) (?:could not|couldn't|cannot|can't) be found",
        r"宛先不明", r"存在しない",
    )),
    ("networkerror", _any(
        r"host not found, try again", r"malformed or unexpected name server reply",
        r"temporary (?:dns|lookup) failure", r"dns (?:server )?(?:timeout|timed out|servfail)",
    )),
    ("hostunknown", _any(
        r"host (?:or domain name )?(?:unknown|not found)", r"unknown (?:host|domain)",
        r"domain (?:name )?(?:not found|does not exist|doesn't exist|unknown|is invalid)",
        r"no such (?:domain|host)", r"unrout(?:e)?able (?:address|domain|mail domain)",
        r"name service error", r"(?:dns|mx) (?:lookup |record )?(?:failed|not found|error)",
        r"no mx (?:record|host)", r"(?:mx|dns) records? (?:point to|for) .{0,40}non-?existent",
        r"illegal host/domain", r"invalid domain", r"domain .{0,40}(?:has no|no valid) mx",
        r"host name (?:lookup )?failure", r"no route for domain", r"dns lookup failure",
        r"host \S+ not found", r"domain (?:is )?not reachable",
        r"(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,}\.? does not exist",
    )),
    ("filtered", _any(
        r"(?:rejected|refused|blocked) by (?:the )?(?:recipient|domain|user)'?s? (?:\w+ )?filter",
        r"(?:domain|content|mail|recipient|user|address) filter", r"due to (?:the )?(?:recipient'?s? )?"
        r"filter", r"message filtered", r"(?:recipient|user) (?:has )?(?:refused|rejected|blocked)",
        r"has (?:rejected|refused) your (?:message|e-?mail)", r"(?:not|isn't) accepting mail from you",
        r"you are not (?:allowed|permitted|authorized) to (?:post|send (?:mail|messages) to)",
        r"does not have permission to post", r"due to recipient preferences",
    )),
    ("spamdetected", _any(
        r"\bspam\b", r"junk ?mail", r"\bbulk (?:mail|e-?mail)", r"unsolicited", r"spamassassin",
        r"looks like (?:spam|junk)", r"content (?:rejected|refused|blocked)", r"suspicious",
        r"message (?:content|body) .{0,30}(?:rejected|not accepted)", r"\buce\b",
    )),
    ("policyviolation", _any(
        r"polic(?:y|ies)", r"prohibited", r"not (?:permitted|allowed) by", r"violat(?:e|es|ion)",
        r"message (?:was |has been )?(?:rejected|refused) (?:because|due to) (?:it )?contain",
        r"attachment .{0,40}(?:not allowed|prohibited|blocked|rejected)", r"acceptable use",
    )),
    ("blocked", _any(
        r"\bblocked\b", r"\bbanned\b", r"access denied", r"connection refused",
        r"\brefused\b.{0,40}\b(?:ip|address|host|connect)", r"(?:too many|excessive) complaints",
        r"not allowed to send", r"service (?:is )?not available for", r"\bdenied\b",
    )),
    ("securityerror", _any(
        r"authenticat(?:ion|e) (?:is )?(?:required|failed|needed|credentials)",
        r"must (?:be )?authenticat", r"(?:sender|smtp|relay) authentication",
        r"not authorized", r"unauthori[sz]ed", r"security (?:policy|error|reasons)",
        r"authentication mechanism", r"forged", r"impersonat", r"spoof",
    )),
    ("notcompliantrfc", _any(
        r"rfc[ -]?(?:5322|2822|822|5321|2821|1123)", r"not (?:rfc )?compliant", r"rfc compliant",
        r"(?:multiple|duplicate|missing|malformed|invalid) (?:\w+ )?(?:header|from|date|subject|"
        r"message-id)", r"bare (?:lf|linefeed|newline|cr)", r"header (?:is )?(?:malformed|invalid)",
    )),
    ("contenterror", _any(
        r"content[- ](?:type|encoding|error)", r"(?:illegal|invalid|bad) (?:character|characters|"
        r"mime|encoding|content)", r"8[- ]?bit (?:data|characters|mime)", r"line too long",
        r"mime (?:error|format|structure)", r"media (?:error|type|not supported)",
    )),
    ("speeding", _any(
        r"rate.?limit", r"too (?:many|much) (?:mail|messages|e-?mails)(?: .{0,40})? "
        r"(?:per|in|from|sent|too fast)", r"sending (?:rate|too fast)", r"throttl",
        r"(?:try|please try) again (?:in|after) \d+", r"too many \w+ (?:this|per|an) (?:hour|day)", r"exceeded (?:the )?(?:sending|hourly|daily) "
        r"(?:limit|quota|rate)", r"too fast",
    )),
    ("toomanyconn", _any(
        r"too many (?:connections|sessions|concurrent|simultaneous|recipients|hosts|smtp)",
        r"connection (?:limit|rate)", r"(?:exceeded|reached) .{0,30}connections",
        r"max(?:imum)? (?:number of )?(?:connections|recipients)",
    )),
    ("expired", _any(
        r"delivery time expired", r"(?:message|mail|delivery) (?:has )?(?:expired|timed? ?out)",
        r"retry (?:time(?:out)?|period|limit) (?:exceeded|expired|reached)", r"(?:queue|queued) "
        r"(?:too long|for too long|time exceeded)", r"could not be delivered (?:for|within|in) "
        r"(?:the last )?\d+", r"(?:unable|failed) to deliver .{0,80}(?:for|in|after) \d+ "
        r"(?:days|hours|minutes)", r"have been (?:unable|trying) to deliver", r"\bgiving up\b",
        r"not (?:been )?delivered (?:after|within)", r"\bexpired\b", r"message (?:has been )?delayed",
        r"(?:timed? ?out|timeout).{0,40}(?:delivery|deliver)", r"retry timeout",
    )),
    ("networkerror", _any(
        r"connection (?:refused|reset|timed out|closed|dropped|failed|lost)", r"network (?:error|"
        r"unreachable|is unreachable|failure)", r"no route to host", r"(?:could not|unable to|"
        r"failed to|cannot|couldn't) connect", r"lost connection", r"host (?:is )?unreachable",
        r"too many hops", r"(?:mail|routing) loop", r"loops? back to (?:myself|me)",
        r"hop count exceeded", r"message (?:is )?looping", r"\btimed? ?out\b", r"timeout",
        r"dns (?:error|failure|problem|server failure)", r"temporary lookup failure",
        r"broken pipe",
    )),
    ("systemfull", _any(
        r"(?:system|server|disk|file system|spool|queue) (?:is )?full", r"insufficient system",
        r"out of (?:disk )?space", r"no space left",
    )),
    ("systemerror", _any(
        r"system (?:error|failure|problem)", r"internal (?:server )?(?:error|failure)",
        r"local (?:error|problem|configuration)", r"server (?:error|configuration|misconfigur)",
        r"misconfigur", r"temporar(?:y|ily) (?:failure|error|unavailable|problem)",
        r"(?:service|server|system) (?:is )?(?:temporarily )?(?:unavailable|not available)",
        r"try (?:again )?later", r"out of memory", r"resources? (?:temporarily )?unavailable",
        r"\bi/o error", r"mail system (?:error|problem)",
    )),
    ("mailererror", _any(
        r"mailer error", r"x-unix;", r"command (?:died|failed|output|not found)", r"procmail",
        r"pipe to \|", r"\bchild status\b", r"exit (?:status|code) \d+", r"program (?:failed|error)",
    )),
    ("syntaxerror", _any(
        r"syntax error", r"command (?:unrecognized|not recognized|not implemented|unknown)",
        r"bad sequence of commands", r"parameter not (?:implemented|recognized)",
        r"unrecognized command", r"invalid command",
    )),
)
