# Сообщения консоли на русском языке.

## Как этот язык записывает даты и числа.
language-name = Русский
format-date = { $day }.{ $month }.{ $year }
format-datetime = { $date } { $hour }:{ $minute }:{ $second } UTC
format-group-separator = { "\u00A0" }
format-decimal-separator = ,
issue-problems = Сертификат не выдан: { $count ->
        [one] { $count } ошибка
        [few] { $count } ошибки
       *[many] { $count } ошибок
    }
