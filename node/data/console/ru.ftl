# Сообщения консоли на русском языке: те же ключи, что в en.ftl (это проверяет тест).

## Как этот язык записывает даты и числа.
language-name = Русский
format-date = { $day }.{ $month }.{ $year }
format-datetime = { $date } { $hour }:{ $minute }:{ $second } UTC
format-group-separator = { "\u00A0" }
format-decimal-separator = ,

## Каждая страница
app-name = консоль kpnode
skip-to-content = Перейти к содержанию
nav-label = Главное меню
nav-dashboard = Сводка
nav-certificates = Сертификаты
nav-issue = Выдать сертификат
nav-verify = Проверка
nav-partners = Партнёры
nav-participants = Участники
nav-statistics = Статистика
nav-password = Пароль
sign-out = Выйти
role-clerk = делопроизводитель
role-supervisor = руководитель
role-customs = таможня
role-auditor = аудитор

## Ошибки
error-title = Ошибка
error-title-400 = Неверный запрос
error-title-403 = Доступ запрещён
error-title-404 = Не найдено
error-title-409 = Конфликт
error-title-413 = Слишком большой запрос
error-title-422 = Данные не приняты
error-title-429 = Слишком много попыток
error-title-500 = Внутренняя ошибка
error-title-503 = Сервис недоступен
error-back = Вернуться к сводке
error-csrf = Эта форма отправлена не из текущего сеанса консоли (её защитный код отсутствует или устарел). Обновите страницу и отправьте форму снова.
forbidden-void = Ваша роль ({ $role }) не позволяет аннулировать сертификаты. Обратитесь к руководителю.
forbidden-confirm = Ваша роль ({ $role }) не позволяет подтверждать импорт. Обратитесь к руководителю.
forbidden-issue = Ваша роль ({ $role }) не позволяет выдавать сертификаты. Обратитесь к руководителю.
forbidden-verify = Ваша роль ({ $role }) не позволяет проверять сертификаты. Обратитесь к руководителю.
forbidden-partners-see = Ваша роль ({ $role }) не позволяет видеть партнёров. Обратитесь к руководителю.
forbidden-partners-enrol = Ваша роль ({ $role }) не позволяет регистрировать партнёров. Обратитесь к руководителю.
forbidden-partners-remove = Ваша роль ({ $role }) не позволяет удалять партнёров. Обратитесь к руководителю.
forbidden-participant-status = Ваша роль ({ $role }) не позволяет менять статус участника. Обратитесь к руководителю.
forbidden-statistics-see = Ваша роль ({ $role }) не позволяет видеть статистику. Обратитесь к руководителю.
forbidden-statistics-download = Ваша роль ({ $role }) не позволяет скачивать статистику. Обратитесь к руководителю.

## Вход
login-title = Вход
login-name = Имя
login-password = Пароль
login-submit = Войти
login-csrf = Эта форма входа устарела или отправлена не из этой консоли. Откройте страницу входа снова.
login-busy = Слишком много одновременных входов, повторите через минуту.
login-wrong = Неверное имя или пароль.
login-too-many-sessions = В этом узле работает слишком много пользователей; повторите позже.
login-locked-account = Слишком много неверных паролей: вход под этим именем с этого адреса заблокирован ещё на { $count ->
        [one] { $count } минуту
        [few] { $count } минуты
       *[many] { $count } минут
    }. Оператор узла может снять блокировку сразу (kpnode users unlock ИМЯ).
login-locked-address = Слишком много неверных паролей с этого адреса: вход с него заблокирован ещё на { $count ->
        [one] { $count } минуту
        [few] { $count } минуты
       *[many] { $count } минут
    }.
login-slowed = Для этого пользователя вводилось много неверных паролей с других адресов, поэтому с нового адреса попытки разрешены по одной: повторите через { $count ->
        [one] { $count } секунду
        [few] { $count } секунды
       *[many] { $count } секунд
    } или войдите с адреса, с которого входили раньше.

## Пароль и язык
password-title = Смена пароля
password-done = Пароль изменён. Другие ваши сеансы завершены.
password-must-change = Вы вошли с одноразовым паролем: прежде чем продолжить, задайте свой.
password-current = Текущий пароль
password-new = Новый пароль
password-new-hint = Не менее 12 символов; проще всего — несколько слов.
password-repeat = Новый пароль ещё раз
password-submit = Сменить пароль
password-differ = Новые пароли не совпадают.
password-current-wrong = Текущий пароль неверен.
password-too-short = Используйте не менее { $count } символов (проще всего — фраза из нескольких слов).
password-too-long = Используйте не более { $count } байт.
password-unchanged = Новый пароль должен отличаться от текущего.
language-title = Язык
language-label = Язык консоли
language-unknown = Консоль не знает языка «{ $code }»; выберите один из: { $codes }.
language-submit = Выбрать этот язык

## Сводка
dashboard-title = Сводка
dashboard-fingerprint = Отпечаток ключа подписи:
dashboard-certificates = Сертификаты
dashboard-issued-here = Выданы здесь
dashboard-received = Получены
dashboard-vigilance = Получены под усиленным контролем
dashboard-log-entries = Записей в журнале
dashboard-attention = Требует внимания
dashboard-nothing = Ничто не требует внимания.
dashboard-links = Связь с партнёрами
dashboard-no-partner = Партнёры ещё не подключены.
col-partner = Партнёр
col-authority = Орган
col-link = Связь
col-last-delivery = Последняя доставка
col-queued = В очереди
col-last-error = Последняя ошибка
col-issued = Выдан
col-parcels = Партии
col-carats = Караты
link-up = есть
link-down = нет

## Сертификаты
list-title = Сертификаты
list-number = Номер
list-direction = Направление
list-status = Статус
list-partner = Партнёр
list-issued-from = Выданы с
list-issued-to = Выданы по
certificates-date-invalid = «{ $value }» — не дата: укажите её в виде ГГГГ-ММ-ДД, например 2026-12-07
certificates-date-order = Эта дата раньше даты «Выданы с» ({ $from }): в диапазон ничего не попадёт
list-any = любой
list-show = Показать
list-none = Подходящих сертификатов нет.
list-searched-to = Поиск выполнен до сертификата { $number }.
list-search-further = Искать дальше
list-next = Следующая страница
direction-out = выдан здесь
direction-in = получен
direction-local = местный
status-queued = в очереди
status-delivered = доставлен
status-received = получен
status-import_confirmed = импорт подтверждён
status-import_discrepancy = расхождение при импорте
status-rejected = отклонён
status-voided = аннулирован
status-expired = истёк
status-replaced = заменён
list-late-arrival = (поздняя доставка)

## Сертификат
cert-title = Сертификат { $number }
cert-status = Статус:
cert-late-arrival = Поздняя доставка: партия получена { $received_on }, после истечения срока действия сертификата ({ $expires_on }); получение всё равно подтверждено.
cert-replaced-by = Заменён: этот сертификат больше не действует, в статистике учитывается его замена, подписанная { $at }:
cert-exporter = Экспортёр
cert-importer = Импортёр
cert-issued-on = Дата выдачи
cert-expires-on = Действителен до
cert-value-usd = Стоимость (долл. США)
cert-replaces = Заменяет сертификат
cert-importing-member = Государство — член союза
cert-exporter-licence = Лицензия экспортёра
cert-importer-licence = Лицензия импортёра
cert-port-of-entry = Пункт ввоза
cert-transport-mode = Вид транспорта
cert-transport-document = Транспортный документ
cert-container-seals = Пломбы контейнера
cert-timeline = История
cert-actions = Действия
cert-download = Скачать подписанный сертификат (.kpc)
cert-qr-alt = QR-печать сертификата { $number }, подписанная этим узлом
cert-qr-caption = QR-печать для сопроводительных документов партии: пограничный пост проверяет её на странице «Проверка» своей консоли или командой
cert-qr-png = Скачать в формате PNG
timeline-exporting-authority = орган страны-экспортёра
timeline-issued = Выдан и подписан: { $issuer }
timeline-delivered-receipt = Доставлен: узел { $receiver } сохранил его под номером { $entry } в своём журнале (подписанная квитанция)
timeline-received = Получен этим узлом
timeline-delivered = Доставлен
timeline-refused = Отклонён узлом импортёра: { $detail }
timeline-confirmed = Импорт подтверждён: { $parcels ->
        [one] { $parcels } партия
        [few] { $parcels } партии
       *[many] { $parcels } партий
    }, { $carats } кар., получено { $received_on }
timeline-confirmed-discrepancy = Импорт подтверждён с расхождением: { $difference } (получено { $parcels ->
        [one] { $parcels } партия
        [few] { $parcels } партии
       *[many] { $parcels } партий
    }, { $carats } кар., { $received_on })
timeline-resolved = Расхождение урегулировано: { $by } ({ $participant }): { $note }
timeline-voided = Аннулирован: { $reason }
timeline-officer = { $step } — сотрудник: { $officer }
void-reason = Причина аннулирования
void-submit = Аннулировать сертификат
void-reason-missing = Укажите причину аннулирования; импортёр её увидит.
confirm-legend = Подтверждение импорта: что поступило
confirm-received-on = Дата получения
confirm-parcels = Получено партий
confirm-carats = Получено карат
confirm-remarks = Примечания (необязательно)
confirm-hint = Если число партий или карат отличается от сертификата, подтверждение фиксирует расхождение, и экспортёр его увидит.
confirm-submit = Подтвердить импорт
confirm-parcels-invalid = «{ $value }» — не целое число партий

## Выдача сертификата
issue-title = Выдать сертификат
issue-intro = Каждое поле соответствует одноимённому полю JSON сертификата (docs/certificate-json.md); узел проверяет его по тем же правилам, что kpnode cert validate и API.
issue-problems = Сертификат не выдан: { $count ->
        [one] { $count } ошибка
        [few] { $count } ошибки
       *[many] { $count } ошибок
    }
issue-submit = Выдать сертификат
issue-choose = Выберите…
issue-section-certificate = Сертификат
issue-number = Номер (необязательно)
issue-number-hint = Оставьте пустым: узел присвоит номер сам.
issue-exporting-participant = Участник-экспортёр
issue-exporting-participant-hint = Код участника этого узла (или его союза).
issue-importing-participant = Участник-импортёр
issue-issuing-authority = Выдавший орган
issue-issued-on = Дата выдачи
issue-expires-on = Действителен до
issue-section-exporter = Экспортёр
issue-section-importer = Импортёр
issue-party-name = Наименование
issue-party-address = Адрес
issue-section-parcel = Партия { $n }
issue-hs-code = Код ТН ВЭД
issue-hs-7102-10 = 7102.10 несортированные
issue-hs-7102-21 = 7102.21 технические
issue-hs-7102-31 = 7102.31 ювелирные
issue-carats = Караты
issue-carats-hint = Десятичное число, не более двух знаков после точки: 1520.35
issue-value-usd = Стоимость (долл. США)
issue-value-usd-hint = Десятичное число, не более двух знаков после точки: 4231000.00
issue-origin = Происхождение
issue-origin-hint = Код участника страны происхождения или MIXED.
issue-origin-area = Район происхождения (необязательно)
issue-origin-area-hint = Обязателен для экспорта участника с ограничениями.
issue-add-parcel = Добавить партию
issue-remove-parcel = Удалить партию { $n }
issue-section-shipment = Отгрузка (необязательно)
issue-port-of-export = Порт вывоза
issue-customs-reference = Таможенный номер
issue-importing-member = Государство — член союза (необязательно)
issue-importing-member-hint = Только если импортирующий участник — союз, например EU: государство-член, куда ввозится партия, например BE. Сертификат направляется узлу этого государства.
issue-party-licence = Лицензия (необязательно)
issue-party-licence-hint = Лицензия на экспорт или импорт либо регистрационный номер в уполномоченном органе.
issue-port-of-entry = Пункт ввоза
issue-port-of-entry-hint = Код UN/LOCODE пункта в стране импорта, например BEANR (Антверпен).
issue-transport-mode = Вид транспорта
issue-transport-mode-none = Не указан
issue-transport-mode-unknown = { $mode } — не вид транспорта
issue-transport-document = Транспортный документ
issue-transport-document-hint = Номер авианакладной, коносамента или транспортной накладной.
issue-container-seals = Пломбы контейнера
issue-container-seals-hint = Номера пломб на контейнере (контейнерах), по одному в строке или через запятую; не более 16.
issue-container-seal-problem = пломба { $n }: { $problem }
transport-mode-air = Воздушный
transport-mode-sea = Морской
transport-mode-road = Автомобильный
transport-mode-rail = Железнодорожный
transport-mode-post = Почтовый
transport-mode-hand-carried = Ручная кладь (курьер)
issue-add-declaration = Добавить декларацию
issue-section-declaration = Декларация { $n }
issue-declaration-code = Код
issue-declaration-code-hint = Например, WDC-SoW.
issue-declaration-text = Текст
issue-remove-declaration = Удалить декларацию { $n }
issue-section-remarks = Примечания (необязательно)
issue-remarks = Примечания
issue-participant-suspended = { $code } — { $name } — приостановлен: сертификаты не принимаются
issue-participant-restricted = { $code } — { $name } — с ограничениями: только в их пределах
issue-participant-unknown = { $code } — нет в реестре

## Проверка
verify-title = Проверка сертификата
verify-intro = Загрузите файл подписанного сертификата (.kpc) или фотографию либо скан его QR-печати (JPEG или PNG, или SVG, который создаёт kpnode cert qr). Подпись проверяется по ключам выдавшего органа в том виде, в каком им доверяет этот узел, и узел сообщает, что ему известно о сертификате сейчас.
verify-file = Файл сертификата или изображение QR-печати
verify-file-hint = Не более { $megabytes } МБ; изображение — не более { $megapixels } мегапикселей.
verify-file-missing = Выберите файл .kpc или фотографию либо скан QR-печати для проверки.
verify-file-image = Не удалось прочитать QR-печать на изображении: { $detail }.
verify-file-kpc = Не удалось прочитать файл .kpc: { $detail }.
verify-file-unknown = Этот файл не является ни подписанным сертификатом (.kpc), ни изображением QR-печати в формате JPEG, PNG или SVG.
verify-submit = Проверить
verify-busy = Сейчас читается слишком много изображений; отправьте форму ещё раз через минуту.
verify-image-task-failed = Не удалось прочитать изображение: { $error }
verify-authentic-seal = QR-печать подлинная
verify-authentic-kpc = Подписанный сертификат подлинный
verify-signed-by = Сертификат { $number } подписан органом { $authority } ({ $issuer }) для { $importer }.
verify-signed-at = Время подписи
verify-signing-key = Ключ подписи
verify-fingerprint = Отпечаток выдавшего органа
verify-valid = Действителен
verify-valid-range = с { $from } по { $to }
verify-compare = Сверьте эти данные с документами и самой партией: печать подтверждает их, одна бумага — нет.
verify-expired = Срок действия сертификата истёк { $date }.
verify-not-authentic = Не подлинный
verify-names-seal = QR-печать относится к сертификату { $number }, но проверку не проходит:
verify-names-file = Файл относится к сертификату { $number }, но проверку не проходит:
verify-not-enrolled = Он подписан участником { $code }, который не зарегистрирован на этом узле как партнёр, поэтому подпись здесь проверить нельзя. Руководитель регистрирует { $code } на странице «Партнёры» (с пакетом и отпечатком, которые сообщает его орган); или проверьте его без сети командой kpnode verify с пакетом { $code }.
verify-not-a-seal = QR-код не является печатью Кимберлийского процесса: { $why }.
verify-do-not-accept = Не принимайте партию по этому документу. Попросите выдавший орган подтвердить сертификат.
verify-on-this-node = На этом узле сейчас
verify-cert-page = страница сертификата
verify-voided = Сертификат аннулирован { $at }: { $reason }. Его подпись и печать по-прежнему проходят проверку, но он больше не действует.
verify-different = На этом узле под этим номером хранится другой подписанный сертификат: загруженный — не тот, что получил этот узел.
verify-not-held = На этом узле нет сертификата { $number }: он не отправлялся этому участнику или ещё не пришёл.

## Партнёры
partners-title = Партнёры
partners-enrolled = Партнёр { $code } зарегистрирован; устанавливается связь с ним.
partners-col-fingerprint = Отпечаток
partners-col-enrolled = Зарегистрирован
partners-col-remove = Удаление
partners-signing-key = ключ подписи { $key }
partners-rotations = { $count ->
        [one] { $count } смена ключа
        [few] { $count } смены ключа
       *[many] { $count } смен ключа
    }
partners-removed = удалён
partners-remove-confirm = Я подтвердил удаление { $code } с его органом
partners-remove-unticked = Отметьте флажок, подтверждающий удаление, и снова нажмите «Удалить».
partners-remove = Удалить { $code }
partners-enrol-title = Регистрация партнёра
partners-enrol-intro = Загрузите пакет, присланный органом партнёра (kpnode peer export), и введите отпечаток, который вам продиктовали по телефону. Пакет с другим отпечатком будет отклонён.
partners-bundle = Файл пакета
partners-bundle-missing = Выберите файл пакета партнёра (kpnode peer export).
partners-bundle-not-text = Этот файл не является пакетом: это не текст.
partners-fingerprint = Отпечаток, продиктованный партнёром
partners-fingerprint-missing = Введите отпечаток, который продиктовал вам орган партнёра (а не тот, что в файле).
partners-replace-identity = Партнёр сменил свою идентичность (новые ключи) и подтвердил это по телефону
partners-enrol-submit = Зарегистрировать

## Участники
participants-title = Участники
participants-intro = Участники Кимберлийского процесса, известные этому узлу, с действующим на сегодня статусом. Откройте участника, чтобы увидеть его историю.
participants-intro-set = Участники Кимберлийского процесса, известные этому узлу, с действующим на сегодня статусом. Откройте участника, чтобы увидеть его историю и изменить его статус.
participants-col-code = Код
participants-col-name = Название
participants-col-since = С
participants-col-reason = Основание
participants-col-detail = Районы происхождения или члены
participants-col-pending = Ожидающие изменения
participant-status-active = действует
participant-status-suspended = приостановлен
participant-status-restricted = ограничен
participant-title = Участник { $code }
participant-bad-code = { $code } — не код участника: { $error }
participant-unknown = { $code } нет в реестре участников этого узла.
participant-member-of = { $code } — государство — член
participant-member-of-end = , который участвует от его имени.
participant-in-force-since = Действует с
participant-history = История
participant-no-history = На этом узле изменений не записано: статус тот, с которым узел был поставлен.
participant-col-recorded = Записано
participant-col-from = С даты
participant-col-decided-by = Кем решено
participant-col-log-entry = Запись журнала
participant-from-list = подписанный список { $source }
participant-from-operator = оператор этого узла
participant-set-title = Изменение статуса
participant-in-force-from = Действует с
participant-reason = Основание (решение, по которому вносится изменение)
participant-set-hint = Изменение подписывается этим узлом и записывается в его журнал. Сертификаты приостановленного участника отклоняются, а сообщения для него задерживаются.
participant-set-submit = Записать изменение

## Сводка: сертификаты по статусам
dashboard-by-status = По статусам
dashboard-counted-at = Подсчитано { $at }.
dashboard-counting = Сертификаты подсчитываются; обновите страницу через минуту.

## Статистика
statistics-title = Статистика
statistics-period = Период
statistics-period-hint = Квартал (2026-Q3), полугодие (2026-H1), месяц (2026-07), год (2026) или диапазон (2026-07-01..2026-09-30).
statistics-period-invalid = «{ $value }» — не период: { $why }
statistics-basis = Импорт учитывается по
statistics-basis-issued = дате выдачи
statistics-basis-imported = дате ввоза (только подтверждённый)
statistics-chart = Диаграмма
statistics-usd = доллары США
statistics-carats = караты
statistics-busy = Сейчас вычисляется статистика других периодов; повторите попытку через минуту.
statistics-still-computing = Статистика ещё вычисляется; повторите попытку через минуту.
statistics-pending = Данные за { $period } вычисляются (для этого читается каждый сертификат периода).
statistics-show-them = Показать их через минуту
statistics-computed-at = Вычислено { $at }.
statistics-stale = Вычисляются более свежие данные.
statistics-csv = Скачать в формате CSV
statistics-voided-excluded = { $count ->
        [one] { $count } аннулированный сертификат не учитывается.
        [few] { $count } аннулированных сертификата не учитываются.
       *[many] { $count } аннулированных сертификатов не учитываются.
    }
statistics-unconfirmed-imports = { $count ->
        [one] { $count } ввоз, действительный в периоде, ещё не подтверждён на этом узле, поэтому у него нет даты ввоза и он не учитывается.
        [few] { $count } ввоза, действительных в периоде, ещё не подтверждены на этом узле, поэтому у них нет даты ввоза и они не учитываются.
       *[many] { $count } ввозов, действительных в периоде, ещё не подтверждены на этом узле, поэтому у них нет даты ввоза и они не учитываются.
    }
statistics-totals = Итоги
statistics-none = За этот период сертификатов нет.
statistics-col-flow = Поток
statistics-col-hs = Код ТН ВЭД
statistics-flow-export = экспорт
statistics-flow-import = импорт
statistics-by-month = По месяцам и партнёрам
statistics-chart-alt-usd = Диаграмма экспорта и импорта по партнёрам и месяцам за { $period } в долларах США; те же данные — в таблице ниже.
statistics-chart-alt-carats = Диаграмма экспорта и импорта по партнёрам и месяцам за { $period } в каратах; те же данные — в таблице ниже.
statistics-by-partner = По партнёрам и кодам ТН ВЭД
statistics-reconciliation = Сверка с партнёрами
statistics-no-exchange = За этот период с партнёрами не обменивались сертификатами.
statistics-col-sent = Отправлено
statistics-col-confirmed = Подтверждено партнёром
statistics-col-awaiting = Ожидает подтверждения
statistics-col-received = Получено
statistics-col-resolved = Расхождения урегулированы
statistics-col-late = Поздние доставки
statistics-att-discrepancy = подтверждение расходится с сертификатом
statistics-att-unconfirmed = не подтверждён партнёром, срок истёк { $date }
statistics-att-not-confirmed-here = ещё не подтверждён здесь (срок истекает { $date })

## Загрузки и QR-печати
upload-unreadable = Не удалось прочитать форму ({ $why }). Обновите страницу и отправьте форму ещё раз.
qr-bad-number = { $number } — не номер сертификата: { $error }
qr-no-certificate = На этом узле нет сертификата { $number }.

## Замечания к сертификату, к подтверждению импорта и к изменению статуса участника,
## выводимые у соответствующих полей (те же, что API сообщает на английском языке).
problem-not-json = Документ не является корректным JSON: { $detail }
problem-not-utf8 = Документ не является текстом в кодировке UTF-8: { $detail }
problem-unknown-field = неизвестное поле; допустимые поля: { $known }
problem-not-object = требуется объект JSON, получено: { $kind ->
        [null] null
        [boolean] логическое значение
        [number] число
        [string] строка
        [array] массив
       *[object] объект
    }
problem-not-string = требуется строка, получено: { $kind ->
        [null] null
        [boolean] логическое значение
        [number] число
        [string] строка
        [array] массив
       *[object] объект
    }
problem-not-amount-string = требуется строка (суммы записываются десятичными строками, например "1520.35"), получено: { $kind ->
        [null] null
        [boolean] логическое значение
        [number] число
        [string] строка
        [array] массив
       *[object] объект
    }
problem-not-array = требуется массив, получено: { $kind ->
        [null] null
        [boolean] логическое значение
        [number] число
        [string] строка
        [array] массив
       *[object] объект
    }
problem-required = обязательно для заполнения
problem-internal = сертификат не удалось прочитать (внутренняя несогласованность данных); сообщите об этом разработчикам
problem-number-prefix = номер { $number } должен начинаться с кода экспортирующего участника { $exporting } (Приложение I к ССКП)
problem-number-not-in-own-range = номер { $number } не входит в диапазон { $issuer }: узел государства — члена объединения выдаёт сертификаты { $union } только с номерами { $own }…, чтобы номера оставались уникальными для всех узлов объединения
problem-number-in-member-range = номер { $number } входит в диапазон { $member }: сертификаты { $exporting } с номерами { $exporting }-{ $member }-… выдаёт только узел { $member }, государства — члена { $exporting }; укажите номер вне диапазонов государств-членов (таков номер, присваиваемый этим узлом: { $exporting }-<год>-<порядковый номер>)
problem-exporting-not-allowed = указан участник { $exporting }, однако этот сертификат может быть выдан только от имени { $allowed }
problem-exporting-not-allowed-union = указан участник { $exporting }, однако этот сертификат может быть выдан только от имени { $issuer } (или { $union } — объединения, в которое он входит)
problem-exporting-member-state = { $exporting } является государством — членом { $union }, участником Кимберлийского процесса является { $union }: сертификаты выдаются от его имени (экспортирующий участник — { $union })
problem-importing-same = указан участник { $importing }, совпадающий с экспортирующим; участники должны различаться
problem-importing-within-union = { $from } и { $importing } входят в { $within }: для торговли внутри объединения сертификат Кимберлийского процесса не требуется (контролируются только его внешние границы)
problem-importing-not-delivered = указан участник { $importing }, однако сертификат доставлен участнику { $expected }
problem-importing-member-state = { $importing } является государством — членом { $union }, участником Кимберлийского процесса является { $union }: укажите { $union } в качестве импортирующего участника
problem-not-a-participant = { $code } не является известным этому узлу участником Кимберлийского процесса; торговля с неучастниками запрещена (раздел III(c) ССКП)
problem-parcels-none = необходимо указать хотя бы одну партию
problem-parcels-too-many = указано партий: { $count }; сертификат может содержать не более { $max }
problem-declarations-too-many = указано деклараций: { $count }; допускается не более { $max }
problem-issued-in-future = дата { $issued } ещё не наступила (сегодня { $today })
problem-expires-not-after-issue = дата { $expires } должна быть позже даты выдачи ({ $issued })
problem-validity-too-long = дата { $expires } отстоит от даты выдачи на { $days } { $days ->
        [one] день
        [few] дня
       *[many] дней
    }; допускается не более { $max } { $max ->
        [one] дня
       *[other] дней
    } (max_validity_days)
problem-expires-passed = дата { $expires } уже прошла (сегодня { $today })
problem-value-empty = «{ $value }»: поле не может быть пустым
problem-value-too-long = «{ $value }»: длина { $len } { $len ->
        [one] символ
        [few] символа
       *[many] символов
    }, допускается не более { $max }
problem-value-too-short = «{ $value }»: длина { $len } { $len ->
        [one] символ
        [few] символа
       *[many] символов
    }, требуется не менее { $min }
problem-value-control-character = «{ $value }» содержит управляющий символ в позиции { $position }; удалите его
problem-value-too-many-decimals = «{ $value }»: более двух знаков после точки; суммы учитываются с точностью до сотых
problem-value-not-positive = «{ $value }»: значение должно быть больше нуля
problem-value-too-large = «{ $value }»: слишком большое значение; максимум — { $max }
problem-value-synthetic = «{ $value }» относится к товарной позиции 7104 (синтетические или реконструированные камни): синтетические алмазы не подпадают под действие Кимберлийского процесса, сертификат КП на них не требуется
problem-value-unknown-hs-code = «{ $value }» не является кодом ТН ВЭД необработанных алмазов, предусмотренным Кимберлийским процессом; укажите 7102.10 (несортированные), 7102.21 (технические) или 7102.31 (нетехнические)
problem-value-no-such-date = «{ $value }»: такой даты нет в календаре
problem-value-not-amount = «{ $value }»: укажите десятичное число не более чем с двумя знаками после точки, например 1520.35
problem-value-not-hex = «{ $value }»: требуются шестнадцатеричные цифры установленной длины
problem-value-not-slug = «{ $value }»: допускаются только латинские буквы, цифры и знаки «-», «_» и «.», например WDC-SoW
problem-value-not-participant-code = «{ $value }»: укажите двухбуквенный код участника заглавными латинскими буквами, например RU или IN
problem-value-not-number-characters = «{ $value }»: допускаются только заглавные латинские буквы A–Z, цифры 0–9 и знак «-»
problem-value-not-origin = «{ $value }»: укажите код участника, например RU, или MIXED для партий смешанного происхождения
problem-value-date-out-of-range = «{ $value }»: дата должна быть в интервале с 1970-01-01 по 9999-12-31
problem-value-not-date = «{ $value }»: укажите дату в формате ГГГГ-ММ-ДД, например 2026-11-28
problem-value-not-instant = «{ $value }»: укажите момент времени в формате ГГГГ-ММ-ДДTЧЧ:ММ:СС.мммZ (UTC)
problem-value-not-locode = «{ $value }»: укажите код UN/LOCODE — две заглавные латинские буквы страны и три заглавные латинские буквы или цифры 2–9, например BEANR (Антверпен)
problem-value-not-transport-mode = «{ $value }»: укажите один из видов транспорта: air, sea, road, rail, post, hand-carried
problem-container-seals-too-many = указано пломб контейнера: { $count }; допускается не более { $max }
problem-replaces-itself = сертификат { $number } не может заменять сам себя: укажите номер заменяемого сертификата
problem-importing-member-not-union = указано государство-член { $member }, но { $importing } не является союзом: поле importing_member заполняется, только если импортирующий участник — союз, например EU
problem-importing-member-not-member = { $member } не является государством — членом { $importing }
problem-restricted-needs-areas = { $code }: для участника с ограничениями необходимо указать утверждённые районы происхождения (правило, которому должны соответствовать его сертификаты)
problem-areas-only-when-restricted = { $code }: утверждённые районы происхождения указываются только для участника с ограничениями, а статус { $code } — { $status ->
        [active] «действует»
        [suspended] «приостановлен»
       *[other] «{ $status }»
    }
problem-too-many-areas = { $code }: допускается не более { $max } утверждённых районов происхождения
problem-too-many-members = { $code }: допускается не более { $max } государств-членов
problem-own-member = { $code }: объединение не может быть членом самого себя
problem-member-twice = { $code }: государство-член { $member } указано дважды
problem-importing-suspended = участие { $code } в Кимберлийском процессе приостановлено с { $since }{ $reason }; выдача сертификатов в его адрес невозможна до восстановления участия
problem-exporting-suspended = участие { $code } в Кимберлийском процессе приостановлено с { $since }{ $reason }; партнёры не принимают его сертификаты
problem-restricted-no-area = не указан район происхождения; для { $code } с { $since }{ $reason } действуют ограничения: его сертификаты принимаются только на алмазы из утверждённых районов происхождения ({ $areas })
problem-restricted-area-not-approved = район «{ $area }» не входит в число утверждённых; для { $code } с { $since }{ $reason } действуют ограничения: его сертификаты принимаются только на алмазы из утверждённых районов происхождения ({ $areas })
problem-restricted-mixed = партия смешанного происхождения не может подтвердить происхождение из одного утверждённого района; для { $code } с { $since }{ $reason } действуют ограничения: его сертификаты принимаются только на алмазы из утверждённых районов происхождения ({ $areas })
problem-member-state-no-status = { $code } является государством — членом { $union } и не имеет собственного статуса (измените статус { $union })
problem-member-is-union = { $member } сам является объединением и поэтому не может быть государством — членом { $code }
problem-member-not-active = статус { $member }: { $status }; участник может войти в { $code } только с действующим статусом (сначала сделайте его активным)
problem-member-of-another = { $member } уже является государством — членом { $other }
problem-authority-mismatch = указан орган «{ $given }», однако этот узел подписывает сертификаты от имени органа «{ $authority }» (параметр authority в node.toml); исправьте сертификат или измените certificates.authority_mismatch в node.toml (сейчас «{ $setting }»)
problem-union-without-node = { $importer } — объединение государств, и собственный узел { $importer } здесь не зарегистрирован: укажите государство-член, в которое ввозится груз (importing_member, например «BE»); его узел получит и подтвердит сертификат
problem-replaces-other = указан { $given }, но это замена сертификата { $old }: не заполняйте replaces или укажите { $old }
problem-before-pending = для { $code } уже записано изменение, вступающее в силу { $pending }; изменение с { $from } заменило бы его (оно записано позже): укажите дату вступления в силу не ранее { $pending }, и изменение будет основано на нём
problem-unknown-status = «{ $value }» не является статусом участника: допустимы active, suspended и restricted
problem-name-needed = { $code } ещё нет в реестре: чтобы добавить участника, укажите его наименование
problem-received-in-future = дата { $received } ещё не наступила (сегодня { $today })
problem-received-before-issue = дата { $received } предшествует дате выдачи сертификата ({ $issued })
problem-parcels-at-least-one = должно быть не менее 1
problem-form-too-many-fields = форма передала { $count } { $count ->
        [one] поле
        [few] поля
       *[many] полей
    } — больше, чем { $max } в самой большой форме сертификата; обновите страницу
problem-form-not-a-field = форма передала поле «{ $name }», которое не является полем сертификата; обновите страницу
problem-form-item-out-of-order = передано раньше элемента { $item } списка { $array }; обновите страницу
problem-form-sent-twice = передано дважды
problem-form-value-and-group = передано одновременно как значение и как группа полей
problem-certificate-not-found = на этом узле нет сертификата { $number }
problem-certificate-wrong-state = сертификат { $number } в состоянии «{ $status }»: сейчас это действие с ним невозможно
problem-certificate-number-taken = сертификат { $number } уже существует с другим содержанием; дайте новому сертификату другой номер
problem-peer-not-enrolled = { $code } не зарегистрирован как партнёр этого узла
problem-peer-quarantined = запись партнёра { $code } не читается (партнёр на карантине); зарегистрируйте его действующий пакет ключей, чтобы заменить её
problem-store-failed = хранилище узла дало сбой ({ $error }) и не ответит на это, пока не будет открыто заново; устраните названную причину: kpnode run откроет хранилище сам, как только пробная запись удастся
problem-signing-unavailable = узел сейчас не может подписывать: { $detail }. Ничего не сделано; повторите, когда ключ станет доступен
problem-node-unavailable = узел сейчас не может это выполнить: { $detail }. Повторите позже
problem-enrol-bundle-invalid = пакет ключей недействителен: { $detail }
problem-enrol-fingerprint-unreadable = отпечаток не читается ({ $detail }): введите его так, как его продиктовал оператор партнёра
problem-enrol-fingerprint-mismatch = отпечатки не совпадают: отпечаток пакета — { $actual }, а вам сообщили { $given }. Не регистрируйте этот пакет; попросите оператора { $participant } ещё раз прочитать свой отпечаток из `kpnode peer export`
problem-enrol-own-bundle = это пакет ключей самого этого узла ({ $participant }); зарегистрируйте пакет партнёра
problem-enrol-endpoint-not-host-port = адрес «{ $endpoint }» не в виде хост:порт
problem-enrol-bundle-older = пакет старее того, что этот узел хранит для { $participant }: в нём ротаций ключей — { $given }, у узла — { $held }. Регистрация откатила бы ключи { $participant } назад; попросите его оператора прислать действующий пакет (`kpnode peer export`)
problem-enrol-history-diverges = ротация ключей № { $sequence } в пакете отличается от той, что этот узел хранит для { $participant }: истории ключей расходятся. Не регистрируйте этот пакет; спросите оператора { $participant }, что случилось с их ключами
problem-enrol-identity-change = { $participant } зарегистрирован с отпечатком { $held }, а у этого пакета отпечаток { $given }: это новая идентичность. Если оператор { $participant } подтвердил по телефону, что заменил ключи, зарегистрируйте пакет снова, отметив «Партнёр сменил свою идентичность»; прежняя идентичность сохранится в архиве, и подписанные ею записи по-прежнему будут проверяться
problem-enrol-tls-key-unproven = ротация ключей № { $sequence } в пакете вводит новый ключ TLS без доказательства, что он принадлежит { $participant }: узел { $participant } должен работать на версии kpnode, которая такое доказательство даёт
problem-enrol-tls-key-taken = пакет заявляет ключ TLS, который уже закреплён за { $owner }: ключ TLS принадлежит одному участнику. Не регистрируйте этот пакет
problem-enrol-rotation-disowns = ротация ключей № { $sequence } в пакете выводит ключ { $key_id } участника { $participant } из употребления с { $effective_from }, но этот узел хранит документ, подписанный { $participant } этим ключом в { $last_signed }: ротация отреклась бы от уже полученного. Не регистрируйте этот пакет; спросите оператора { $participant }, что случилось с их ключами
