// The pages' text in Chinese and English. The choice is remembered in localStorage; Chinese
// is the default, the language of the network's clinics and centers. Templates carry the
// Chinese text as written content plus a `data-i18n` key, so a page reads right even before
// this script runs; pages re-render their dynamic parts on the `langchange` event.
const STORE_KEY = "telediag.lang";

const TEXT = {
  zh: {
    "app.title": "远程心电诊断", "app.name": "远程心电诊断",
    "action.logout": "退出", "action.close": "关闭",
    "role.reader": "诊断医师", "role.clinic": "基层站点", "role.center_admin": "中心管理员", "role.network_admin": "网络管理员",
    "level.prefecture": "地区中心", "level.county": "县级分中心", "level.township": "乡镇卫生院",
    "qual.ecg": "心电", "qual.imaging": "影像",
    "sex.M": "男", "sex.F": "女", "sex.O": "其他", "sex.U": "未知",
    "priority.critical": "危急", "priority.urgent": "紧急", "priority.routine": "常规",
    "kind.ecg": "心电", "kind.imaging": "影像",
    "error.session": "会话已结束，请重新登录",

    "login.title": "登录", "login.username": "用户名", "login.password": "密码", "login.submit": "登录",
    "login.error.invalid": "用户名或密码错误", "login.error.locked": "账户已被临时锁定，请 15 分钟后再试",
    "login.error.rate": "尝试次数过多，请稍后再试", "login.error.generic": "登录失败：{reason}",
    "forbidden.text": "您的角色不能打开此页面。", "forbidden.home": "返回我的页面",

    "queue.title": "待诊断", "queue.recent": "最近病例", "queue.empty": "队列为空", "queue.mine": "我正在阅读",
    "queue.claimedBy": "{who} 正在阅读", "queue.updated": "更新于 {time}",
    "case.pick": "从左侧队列选择一个病例",
    "state.reported": "已签发", "state.received": "已接收，分析中", "state.analysisFailed": "自动分析失败",
    "state.reading": "{who} 正在诊断", "state.waiting": "等待诊断 {site}",
    "state.active": "启用", "state.disabled": "已停用",
    "alarm.new": "危急值：{text}（病例 #{case}）",

    "viewer.gain": "增益", "viewer.speed": "走纸速度", "viewer.zoom": "缩放",
    "viewer.loading": "正在加载…", "viewer.failed": "加载失败", "viewer.nothing": "此病例没有可显示的对象",
    "viewer.window": "{from}–{to} 秒 / 共 {total} 秒", "viewer.overviewHint": "点击跳转到该时间",
    "viewer.overviewFailed": "概览加载失败", "viewer.caliperHint": "拖动测量：间期（毫秒、心率）与振幅（毫伏）；双击清除",
    "image.hint": "拖动调节窗宽/窗位，滚轮缩放", "image.reset": "复位", "image.noPreview": "此影像暂无预览",
    "image.wl": "窗宽 {w} 窗位 {l}",
    "compare.title": "既往心电图", "compare.pick": "既往心电图", "compare.none": "（不对比）",

    "analysis.title": "自动分析", "analysis.pending": "自动分析尚未完成",
    "analysis.recording": "记录", "analysis.recordingText": "{leads} 导联，{fs} Hz，{s} 秒",
    "analysis.hr": "心率", "analysis.rhythm": "节律", "analysis.alarms": "危急值", "analysis.findings": "发现",
    "analysis.device": "设备诊断",
    "rhythm.sinus": "窦性心律", "rhythm.sinus_bradycardia": "窦性心动过缓", "rhythm.sinus_tachycardia": "窦性心动过速",
    "rhythm.af": "心房颤动", "rhythm.afl": "心房扑动", "rhythm.svt": "室上性心动过速", "rhythm.vt": "室性心动过速",
    "rhythm.vf": "心室颤动", "rhythm.asystole": "心脏停搏", "rhythm.pause": "长间歇", "rhythm.av_block": "房室传导阻滞",
    "rhythm.paced": "起搏心律", "rhythm.unreadable": "信号不可读", "rhythm.other": "其他",

    "report.measurements": "测量值", "report.statements": "诊断语句", "report.conclusion": "结论",
    "report.search": "搜索代码或文字", "report.remove": "移除", "report.noStatements": "尚未选择诊断语句",
    "report.noMeasurements": "无测量值", "report.auto": "自动",
    "report.save": "保存草稿", "report.sign": "签名", "report.amend": "修改报告", "report.amendSign": "签名修改",
    "report.release": "释放", "report.consult": "提交上级会诊", "report.reason": "修改原因",
    "report.proposed": "自动分析生成的建议，尚未保存", "report.draftOf": "草稿第 {version} 版（{author}）",
    "report.saved": "草稿已保存（第 {version} 版）", "report.signed": "报告已签名（第 {version} 版）",
    "report.amended": "修改已签名（第 {version} 版）", "report.reasonNeeded": "请填写修改原因",
    "report.consultConfirm": "将此病例提交上级中心会诊？", "report.consulted": "已提交至 {site}",
    "sig.version": "版本", "sig.by": "签名医师", "sig.at": "签名时间", "sig.sha256": "SHA-256",
    "sig.signature": "签名 (Ed25519)", "sig.replaces": "替代版本",
    "m.heart_rate_bpm": "心率", "m.rr_ms": "RR 间期", "m.p_ms": "P 波时限", "m.pr_ms": "PR 间期",
    "m.qrs_ms": "QRS 时限", "m.qt_ms": "QT 间期", "m.qtc_ms": "QTc (Bazett)", "m.qtc_bazett_ms": "QTc (Bazett)",
    "m.qtc_fridericia_ms": "QTc (Fridericia)", "m.p_axis_deg": "P 电轴", "m.qrs_axis_deg": "QRS 电轴",
    "m.t_axis_deg": "T 电轴",

    "alarms.title": "危急值报警", "alarms.none": "无报警", "alarms.open": "未确认", "alarms.ack": "确认",
    "alarms.ackedBy": "{who} 于 {time} 确认",
    "cases.title": "本站病例", "cases.none": "暂无病例", "cases.pdf": "下载报告 PDF", "cases.show": "查看报告", "cases.hide": "收起",
    "cases.signedBy": "{who} 于 {time} 签名（第 {version} 版）",
    "cases.reportArrived": "病例 #{id} 的报告已签发",
    "upload.title": "上传心电图", "upload.rules": "危急值规则", "upload.rulesDefault": "设备默认",
    "upload.submit": "上传", "upload.sending": "正在上传…",
    "upload.hint": "DICOM、SCP-ECG、HL7 aECG、GE MUSE、Philips XML；WFDB 记录请同时选择 .hea 与 .dat 文件",
    "upload.stored": "已保存为病例 #{id}", "upload.duplicate": "{file} 已存在（病例 #{id}）",
    "upload.quarantined": "{file} 与已有对象冲突，已隔离",
    "rules.resting": "静息", "rules.holter": "动态（Holter）", "rules.monitoring": "监护",
    "col.time": "时间", "col.case": "病例", "col.alarm": "报警", "col.state": "状态", "col.received": "接收时间",
    "col.patient": "患者", "col.priority": "优先级", "col.report": "报告", "col.name": "名称", "col.level": "级别",
    "col.parent": "上级", "col.site": "站点", "col.username": "用户名", "col.role": "角色", "col.qualified": "资质",
    "col.action": "操作", "col.detail": "详情", "col.address": "地址",

    "admin.sites": "站点", "admin.devices": "设备", "admin.users": "用户", "admin.audit": "审计",
    "device.name": "设备名称", "device.ae": "AE Title", "device.add": "添加设备",
    "device.keyOnce": "API 密钥（仅显示一次，请立即抄录）：", "device.rotate": "更换密钥",
    "device.rotateConfirm": "更换设备 {name} 的 API 密钥？旧密钥将立即失效。", "device.rotated": "设备 {name} 的密钥已更换",
    "device.added": "设备 {name} 已添加",
    "user.username": "用户名", "user.displayName": "姓名", "user.password": "初始密码", "user.add": "添加用户",
    "user.disable": "停用", "user.disableConfirm": "停用用户 {username}？", "user.disabled": "用户 {username} 已停用",
    "user.added": "用户 {username} 已添加",
    "audit.caseId": "病例号", "audit.show": "查看", "audit.count": "{n} 条记录",
    "act.login": "登录", "act.login_failed": "登录失败", "act.logout": "退出", "act.view": "查看", "act.claim": "领取",
    "act.release": "释放", "act.consult": "会诊", "act.escalate": "超时上转", "act.edit": "编辑", "act.sign": "签名",
    "act.amend": "修改", "act.download": "下载", "act.upload": "上传", "act.acknowledge": "确认报警",
  },
  en: {
    "app.title": "telediag", "app.name": "Remote ECG diagnosis",
    "action.logout": "Log out", "action.close": "Close",
    "role.reader": "Reader", "role.clinic": "Clinic", "role.center_admin": "Center admin", "role.network_admin": "Network admin",
    "level.prefecture": "Prefecture center", "level.county": "County sub-center", "level.township": "Township clinic",
    "qual.ecg": "ECG", "qual.imaging": "Imaging",
    "sex.M": "M", "sex.F": "F", "sex.O": "other", "sex.U": "unknown",
    "priority.critical": "Critical", "priority.urgent": "Urgent", "priority.routine": "Routine",
    "kind.ecg": "ECG", "kind.imaging": "Imaging",
    "error.session": "Your session ended; please log in again",

    "login.title": "Log in", "login.username": "Username", "login.password": "Password", "login.submit": "Log in",
    "login.error.invalid": "Wrong username or password", "login.error.locked": "Account locked for 15 minutes",
    "login.error.rate": "Too many attempts; try again later", "login.error.generic": "Login failed: {reason}",
    "forbidden.text": "Your role cannot open this page.", "forbidden.home": "Back to my page",

    "queue.title": "To read", "queue.recent": "Recent", "queue.empty": "The queue is empty", "queue.mine": "reading (me)",
    "queue.claimedBy": "claimed by {who}", "queue.updated": "updated {time}",
    "case.pick": "Pick a case from the queue",
    "state.reported": "signed", "state.received": "received, analysing", "state.analysisFailed": "analysis failed",
    "state.reading": "being read by {who}", "state.waiting": "waiting for a reader {site}",
    "state.active": "active", "state.disabled": "disabled",
    "alarm.new": "Critical value: {text} (case #{case})",

    "viewer.gain": "Gain", "viewer.speed": "Speed", "viewer.zoom": "Zoom",
    "viewer.loading": "Loading…", "viewer.failed": "Could not load", "viewer.nothing": "Nothing to show in this case",
    "viewer.window": "{from}–{to} s of {total} s", "viewer.overviewHint": "Click to jump there",
    "viewer.overviewFailed": "Could not load the overview",
    "viewer.caliperHint": "Drag to measure an interval (ms, bpm) and an amplitude (mV); double-click clears",
    "image.hint": "Drag for window/level, wheel to zoom", "image.reset": "Reset", "image.noPreview": "No preview of this image yet",
    "image.wl": "W {w} L {l}",
    "compare.title": "Previous ECG", "compare.pick": "Previous ECG", "compare.none": "(no comparison)",

    "analysis.title": "Automated analysis", "analysis.pending": "The automated analysis has not finished",
    "analysis.recording": "Recording", "analysis.recordingText": "{leads} leads, {fs} Hz, {s} s",
    "analysis.hr": "Heart rate", "analysis.rhythm": "Rhythm", "analysis.alarms": "Critical values",
    "analysis.findings": "Findings", "analysis.device": "Cart statements",
    "rhythm.sinus": "Sinus rhythm", "rhythm.sinus_bradycardia": "Sinus bradycardia", "rhythm.sinus_tachycardia": "Sinus tachycardia",
    "rhythm.af": "Atrial fibrillation", "rhythm.afl": "Atrial flutter", "rhythm.svt": "SVT", "rhythm.vt": "Ventricular tachycardia",
    "rhythm.vf": "Ventricular fibrillation", "rhythm.asystole": "Asystole", "rhythm.pause": "Pause", "rhythm.av_block": "AV block",
    "rhythm.paced": "Paced", "rhythm.unreadable": "Unreadable", "rhythm.other": "Other",

    "report.measurements": "Measurements", "report.statements": "Statements", "report.conclusion": "Conclusion",
    "report.search": "Search code or text", "report.remove": "Remove", "report.noStatements": "No statement chosen",
    "report.noMeasurements": "No measurements", "report.auto": "auto",
    "report.save": "Save draft", "report.sign": "Sign", "report.amend": "Amend", "report.amendSign": "Sign amendment",
    "report.release": "Release", "report.consult": "Consult prefecture", "report.reason": "Reason for the amendment",
    "report.proposed": "Proposed from the automated analysis, not saved yet", "report.draftOf": "Draft version {version} ({author})",
    "report.saved": "Draft saved (version {version})", "report.signed": "Report signed (version {version})",
    "report.amended": "Amendment signed (version {version})", "report.reasonNeeded": "Give a reason for the amendment",
    "report.consultConfirm": "Send this case to the prefecture center for consultation?", "report.consulted": "Sent to {site}",
    "sig.version": "Version", "sig.by": "Signed by", "sig.at": "Signed at", "sig.sha256": "SHA-256",
    "sig.signature": "Signature (Ed25519)", "sig.replaces": "Replaces version",
    "m.heart_rate_bpm": "Heart rate", "m.rr_ms": "RR interval", "m.p_ms": "P duration", "m.pr_ms": "PR interval",
    "m.qrs_ms": "QRS duration", "m.qt_ms": "QT interval", "m.qtc_ms": "QTc (Bazett)", "m.qtc_bazett_ms": "QTc (Bazett)",
    "m.qtc_fridericia_ms": "QTc (Fridericia)", "m.p_axis_deg": "P axis", "m.qrs_axis_deg": "QRS axis",
    "m.t_axis_deg": "T axis",

    "alarms.title": "Critical-value alarms", "alarms.none": "No alarms", "alarms.open": "open", "alarms.ack": "Acknowledge",
    "alarms.ackedBy": "acknowledged by {who} at {time}",
    "cases.title": "Cases of this site", "cases.none": "No cases yet", "cases.pdf": "Report PDF", "cases.show": "Show report", "cases.hide": "Hide",
    "cases.signedBy": "signed by {who} at {time} (version {version})",
    "cases.reportArrived": "The report of case #{id} is signed",
    "upload.title": "Upload an ECG", "upload.rules": "Critical-value rules", "upload.rulesDefault": "device default",
    "upload.submit": "Upload", "upload.sending": "Uploading…",
    "upload.hint": "DICOM, SCP-ECG, HL7 aECG, GE MUSE, Philips XML; for a WFDB record choose the .hea and .dat files together",
    "upload.stored": "stored as case #{id}", "upload.duplicate": "{file} was already stored (case #{id})",
    "upload.quarantined": "{file} conflicts with a stored object: quarantined",
    "rules.resting": "Resting", "rules.holter": "Holter", "rules.monitoring": "Monitoring",
    "col.time": "Time", "col.case": "Case", "col.alarm": "Alarm", "col.state": "State", "col.received": "Received",
    "col.patient": "Patient", "col.priority": "Priority", "col.report": "Report", "col.name": "Name", "col.level": "Level",
    "col.parent": "Parent", "col.site": "Site", "col.username": "Username", "col.role": "Role", "col.qualified": "Qualified",
    "col.action": "Action", "col.detail": "Detail", "col.address": "Address",

    "admin.sites": "Sites", "admin.devices": "Devices", "admin.users": "Users", "admin.audit": "Audit",
    "device.name": "Device name", "device.ae": "AE title", "device.add": "Add device",
    "device.keyOnce": "API key (shown once, copy it now):", "device.rotate": "Rotate key",
    "device.rotateConfirm": "Rotate the API key of {name}? The old key stops working at once.",
    "device.rotated": "The key of {name} was rotated", "device.added": "Device {name} added",
    "user.username": "Username", "user.displayName": "Display name", "user.password": "Initial password", "user.add": "Add user",
    "user.disable": "Disable", "user.disableConfirm": "Disable user {username}?", "user.disabled": "User {username} disabled",
    "user.added": "User {username} added",
    "audit.caseId": "Case id", "audit.show": "Show", "audit.count": "{n} entries",
    "act.login": "login", "act.login_failed": "failed login", "act.logout": "logout", "act.view": "view", "act.claim": "claim",
    "act.release": "release", "act.consult": "consult", "act.escalate": "escalate", "act.edit": "edit", "act.sign": "sign",
    "act.amend": "amend", "act.download": "download", "act.upload": "upload", "act.acknowledge": "acknowledge",
  },
};

export function lang() {
  return localStorage.getItem(STORE_KEY) === "en" ? "en" : "zh";
}

/** The text of `key` with `{name}` placeholders filled from `vars`; `fallback` (or the key)
 * when neither language has it — e.g. a rhythm label added to the analysis later. */
export function t(key, vars = {}, fallback = undefined) {
  const text = TEXT[lang()][key] ?? TEXT.en[key] ?? fallback ?? key;
  return String(text).replace(/\{(\w+)\}/g, (_, name) => vars[name] ?? "");
}

/** The API's own bilingual fields (an alarm's text and text_zh). */
export function localized(en, zh) {
  return lang() === "zh" ? zh || en || "" : en || zh || "";
}

export function applyI18n(root = document) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  const toggle = document.getElementById("lang-toggle");
  if (toggle) toggle.textContent = lang() === "zh" ? "EN" : "中文";
}

function setLang(value) {
  localStorage.setItem(STORE_KEY, value);
  applyI18n();
  document.dispatchEvent(new CustomEvent("langchange"));
}

document.getElementById("lang-toggle")?.addEventListener("click", () => setLang(lang() === "zh" ? "en" : "zh"));
applyI18n();
