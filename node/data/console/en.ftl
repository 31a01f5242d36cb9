# The console's messages in English. Every .ftl file in this folder is one language, named by
# its code (en.ftl, ru.ftl); each must have every message of this file, no more (a test checks).

## How this language writes dates and numbers (pieces put together by node/src/service/i18n.rs).
language-name = English
format-date = { $year }-{ $month }-{ $day }
format-datetime = { $date }T{ $hour }:{ $minute }:{ $second }.{ $millis }Z
format-group-separator = { "" }
format-decimal-separator = .
issue-problems = The certificate was not issued: { $count ->
        [one] { $count } problem
       *[other] { $count } problems
    }
