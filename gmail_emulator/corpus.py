# ruff: noqa: RUF001 - non-ASCII look-alike characters are the point of this corpus
"""Text fragments for generated mail, one set per charset, so bodies really need it."""

from __future__ import annotations

ENGLISH = [
    "Thanks for the update on the quarterly numbers.",
    "Could you send me the latest version of the draft before Friday?",
    "I've attached the notes from yesterday's meeting & the action items.",
    "Let's move the review to next Tuesday at 3pm if that works for everyone.",
    "The build is green again after the dependency bump.",
    "Please find the invoice for last month below.",
    "Reminder: the office will be closed on Monday.",
    "We shipped the new onboarding flow; early numbers look <good>.",
    "Can we sync about the migration plan? I have a few concerns.",
    "Your order has been dispatched and should arrive within 3-5 days.",
    "Happy birthday! Hope you have a great day.",
    "The server ran out of disk space at 02:14 UTC; it's fixed now.",
    "Here is the summary you asked for, with the figures from finance.",
    "I won't be able to make it to the call, sorry about that.",
    "New comment on your pull request: \"looks good to me\".",
]
FRENCH_GERMAN = [
    "Merci beaucoup pour votre réponse très rapide.",
    "À bientôt, et bonne journée à toute l'équipe !",
    "Le café de la réunion était délicieux, n'est-ce pas ?",
    "Vielen Dank für die schnelle Rückmeldung.",
    "Grüße aus München - wir sehen uns nächste Woche.",
    "Die Größe der Datei überschreitet das Maß.",
    "Señor Muñoz llegará mañana por la tarde.",
]
WINDOWS_1252 = [
    "The total is €1,250 – payable within 30 days.",
    "He said “it’s fine” and left… again.",
    "Price list • updated • see attached ‰ figures.",
    "Don’t forget the “kick-off” meeting — it’s at 9.",
]
RUSSIAN = [
    "Привет! Как дела с проектом?",
    "Спасибо за письмо, отвечу завтра.",
    "Встреча перенесена на пятницу в десять утра.",
    "Пожалуйста, посмотрите вложенный документ.",
]
JAPANESE = [
    "お疲れ様です。会議の資料を送ります。",
    "ご確認のほど、よろしくお願いいたします。",
    "明日の打ち合わせは午後三時からです。",
    "先日はありがとうございました。",
]
UTF8_MIX = [
    "Καλημέρα! Τα λέμε αύριο.",
    "Zażółć gęślą jaźń — test of Polish letters.",
    "Launch day 🚀 — thanks everyone 🎉",
    "会議は明日です。 Meeting is tomorrow.",
    "Čeština, ελληνικά, עברית and العربية in one line.",
    "Ünïcödé everywhere: naïve café résumé.",
]

SUBJECTS_ASCII = [
    "Quarterly report", "Meeting notes", "Invoice #{n}", "Your order #{n} has shipped",
    "Re: project plan", "Weekly digest", "Build failed on main", "Lunch on Friday?",
    "Action required: verify your account", "Holiday schedule", "Design review",
    "Welcome to the team", "Password reset", "Trip itinerary", "Newsletter — issue {n}",
]
SUBJECTS_BY_CHARSET = {
    "utf-8": ["Café résumé 🎉 {n}", "Καλημέρα σας", "Zażółć gęślą jaźń", "Launch 🚀 update"],
    "iso-8859-1": ["Réunion de l'équipe", "Grüße aus München", "Señor Muñoz"],
    "windows-1252": ["€ invoice – “final”", "Don’t miss this…"],
    "iso-2022-jp": ["会議の資料", "打ち合わせの件"],
    "koi8-r": ["Привет из Москвы", "Отчёт за месяц"],
}
TEXT_BY_CHARSET = {
    "us-ascii": ENGLISH,
    "utf-8": UTF8_MIX + ENGLISH,
    "iso-8859-1": FRENCH_GERMAN,
    "windows-1252": WINDOWS_1252 + ENGLISH,
    "iso-2022-jp": JAPANESE,
    "koi8-r": RUSSIAN,
}

FIRST_NAMES = ["Ana", "Bruno", "Chloé", "Dmitri", "Emma", "Fatima", "Georg", "Hiro",
               "Ingrid", "José", "Kofi", "Lena", "Marta", "Nils", "Olga", "Priya"]
LAST_NAMES = ["Smith", "Müller", "Dubois", "Ivanov", "Tanaka", "García", "Okafor",
              "Nowak", "Rossi", "Kim", "Larsen", "Silva"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example",
           "shop.example", "news.example.org"]
