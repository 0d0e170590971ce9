"""MMLU-ProX (Xuan et al. 2025, arXiv 2503.10497; ``li-lab/MMLU-ProX`` and ``-Lite``) as
lm-evaluation-harness 0.4.13 builds its ``mmlu_prox_<lang>_<subject>`` tasks: a *generation*
task, 5-shot chain of thought, the answer letter taken from the output by a per-language regex.

**Rows** (the HF dataset, one config per language, splits ``validation`` and ``test``; JSONL,
JSON or Parquet): ``question_id``, ``question``, ``option_0`` .. ``option_9`` (None past the
item's last option), ``answer`` (the letter A-J), ``answer_index``, ``cot_content`` (the worked
answer of a validation row), ``category`` (``biology`` .. ``computer science`` .. ``psychology``)
and ``src``. ``subjects`` keeps categories (lm-eval's ``process_docs`` filters both splits by
category the same way).

**Prompt** (lm-eval's ``utils.format_cot_example`` and the subject YAML's ``description``): the
description ``<the language's "The following are multiple choice questions (with answers) about
{subject}. Think step by step and then finish your answer with "the answer is (X)" ...">\\n``,
then the first ``shots`` validation rows of the item's category (``first_n``), each
``<Question:>\\n<question>\\n<Options:>\\nA. <option_0>\\n...\\n<cot_content with its "A: Let's
think step by step." cue replaced by "Answer: Let's think step by step.">\\n\\n``, then the item
``<Question:>\\n<question>\\n<Options:>\\nA. ...\\n<Answer: Let's think step by step.>`` — every
label in the language (:data:`PHRASES`, :data:`SUBJECTS`).

**Scoring**: the output is cut at the first of lm-eval's stop strings (``</s>``, ``Q:``, the
language's question label, ``<|im_end|>``); the first match of the language's regex (its answer
phrase with ``({})`` -> ``\\(?([ABCDEFGHIJ])\\)?``; English without its leading "the") is the
prediction (``[invalid]`` when none, lm-eval's fallback); ``exact_match`` compares it with the
answer letter ignoring case and ASCII punctuation.

The phrase and subject tables below are lm-evaluation-harness 0.4.13's
``lm_eval/tasks/mmlu_prox/lang_libs.py`` (``LANG_LIBS``, ``LANG_SUBJECTS``; MIT licence), ported
because lm-eval is a test dependency only; ``tests/test_mmlu_prox.py`` checks them, the regexes,
stop strings and descriptions against the installed package's task files, and our prompts and
extracted answers against lm-eval's own functions on the same rows.
"""

from __future__ import annotations

import re
import string
from typing import Any, NamedTuple

from rise_jax.data.languages import get_language
from rise_jax.evaluation.rows import FormatError, convert_rows

LETTERS = "ABCDEFGHIJ"
FALLBACK = "[invalid]"  # lm-eval's RegexFilter result when nothing matches
DEFAULT_SHOTS = 5
MAX_NEW_TOKENS = 2048  # lm-eval's max_gen_toks for these tasks


class Phrases(NamedTuple):
    """One language's prompt words (``LANG_LIBS[lang]``, in its order)."""

    question: str  # "Question:"
    options: str  # "Options:"
    answer_cue: str  # "Answer: Let's think step by step."
    description: str  # with {subject} and {ans_suffix}
    exemplar_cue: str  # "A: Let's think step by step." (in cot_content; replaced by answer_cue)
    answer_phrase: str  # "the answer is ({})"


# The 14 categories, in LANG_SUBJECTS' order; a row's category is the key with "_" -> " ".
CATEGORIES = (
    "biology",
    "business",
    "chemistry",
    "computer_science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)
# Each language's names of CATEGORIES (what its descriptions say).
PHRASES: dict[str, Phrases] = {
    "en": Phrases(
        "Question:",
        "Options:",
        "Answer: Let's think step by step.",
        'The following are multiple choice questions (with answers) about {subject}. Think step by step and then finish your answer with "{ans_suffix}" where X is the correct letter choice.',
        "A: Let's think step by step.",
        "the answer is ({})",
    ),
    "ja": Phrases(
        "質問：",
        "選択肢：",
        "回答：一歩一歩考えていきましょう。",
        "以下は{subject}に関する選択問題（解答付き）です。段階的に考え、最後に「{ans_suffix}」と回答を締めくくってください。Xは正解の選択肢を示す文字です。",
        "A: 一歩一歩考えていきましょう。",
        "答えは ({}) です",
    ),
    "zh": Phrases(
        "问题：",
        "选项：",
        "答案：让我们一步一步地思考。",
        '以下是关于{subject}的选择题（带有答案）。请逐步思考，然后以"{ans_suffix}"结束您的回答，其中X是正确的选项字母。',
        "A: 让我们一步一步地思考。",
        "答案是 ({})",
    ),
    "ko": Phrases(
        "질문：",
        "선택 사항：",
        "답변: 한 단계씩 생각해 봅시다.",
        '다음은 {subject}에 관한 객관식 문제(정답 포함)입니다. 단계적으로 생각한 다음 "{ans_suffix}"로 답변을 마무리하세요. 여기서 X는 올바른 선택지 문자입니다.',
        "A: 한 단계씩 생각해 봅시다.",
        "답은 ({})입니다",
    ),
    "fr": Phrases(
        "Question :",
        "Options :",
        "Réponse : Réfléchissons étape par étape.",
        'Voici des questions à choix multiples (avec réponses) sur {subject}. Réfléchissez étape par étape, puis terminez votre réponse par "{ans_suffix}" où X est la lettre correspondant au bon choix.',
        "A: Réfléchissons étape par étape.",
        "La réponse est ({})",
    ),
    "de": Phrases(
        "Frage:",
        "Optionen:",
        "Antwort: Denken wir Schritt für Schritt nach.",
        'Im Folgenden sind Multiple-Choice-Fragen (mit Antworten) zu {subject}. Denken Sie Schritt für Schritt nach und beenden Sie Ihre Antwort mit "{ans_suffix}", wobei X der richtige Buchstabe ist.',
        "A: Denken wir Schritt für Schritt nach.",
        "Die Antwort ist ({})",
    ),
    "es": Phrases(
        "Pregunta:",
        "Opciones:",
        "Respuesta: Pensemos paso a paso.",
        'Las siguientes son preguntas de opción múltiple (con respuestas) sobre {subject}. Piense paso a paso y luego termine su respuesta con "{ans_suffix}" donde X es la letra de la opción correcta.',
        "A: Pensemos paso a paso.",
        "La respuesta es ({})",
    ),
    "pt": Phrases(
        "Pergunta:",
        "Opções:",
        "Resposta: Vamos pensar passo a passo.",
        'A seguir estão perguntas de múltipla escolha (com respostas) sobre {subject}. Pense passo a passo e termine sua resposta com "{ans_suffix}" onde X é a letra da opção correta.',
        "A: Vamos pensar passo a passo.",
        "A resposta é ({})",
    ),
    "zu": Phrases(
        "Umbuzo:",
        "Izinketho:",
        "Impendulo: Asicabange isinyathelo ngesinyathelo.",
        'Okulandelayo yimibuzo ehlukahlukene (enezimpendulo) mayelana ne-{subject}. Cabanga isinyathelo ngesinyathelo bese uqeda impendulo yakho nge-"{ans_suffix}" lapho u-X eyinhlamvu eyisinqumo esifanele.',
        "A: Asicabange isinyathelo ngesinyathelo.",
        "Impendulo ithi ({})",
    ),
    "sw": Phrases(
        "Swali:",
        "Chaguo:",
        "Jibu: Hebu tufikiria hatua kwa hatua.",
        'Yafuatayo ni maswali ya chaguo-nyingi (yenye majibu) kuhusu {subject}. Fikiria hatua kwa hatua kisha malizia jibu lako kwa "{ans_suffix}" ambapo X ni herufi ya chaguo sahihi.',
        "A: Hebu tufikiria hatua kwa hatua.",
        "Jibu ni ({})",
    ),
    "wo": Phrases(
        "Laaj:",
        "Tànneef:",
        "Tontu: Nan xalaat ci dooley dooley.",
        'Li ci topp ay laaj yu am tànneef la (ak tontu) ci mbir mi ñuy wax {subject}. Xalaatal ci dooley dooley te nga jeexal sa tontu ak "{ans_suffix}" fu X di araf bi jëkk ci tontu bi.',
        "A: Nan xalaat ci dooley dooley.",
        "Tontu bi mooy ({})",
    ),
    "yo": Phrases(
        "Ìbéèrè:",
        "Àwọn àṣàyàn:",
        "Ìdáhùn: Ẹ jẹ́ ká ronú lọ́nà tíṣíṣe.",
        'Àwọn wọ̀nyí jẹ́ àwọn ìbéèrè ọ̀pọ̀ àṣàyàn (pẹ̀lú àwọn ìdáhùn) nípa {subject}. Rò ní ìṣẹ́sẹ́ kí o sì parí ìdáhùn rẹ pẹ̀lú "{ans_suffix}" níbi tí X jẹ́ lẹ́tà àṣàyàn tó tọ́.',
        "A: Ẹ jẹ́ ká ronú lọ́nà tíṣíṣe.",
        "Ìdáhùn náà ni ({})",
    ),
    "th": Phrases(
        "คำถาม:",
        "ตัวเลือก:",
        "คำตอบ: มาคิดทีละขั้นตอนกัน",
        'ต่อไปนี้เป็นคำถามปรนัย (พร้อมคำตอบ) เกี่ยวกับ {subject} คิดทีละขั้นตอนแล้วสรุปคำตอบด้วย "{ans_suffix}" โดยที่ X คือตัวอักษรที่เป็นตัวเลือกที่ถูกต้อง',
        "A: มาคิดทีละขั้นตอนกัน",
        "คำตอบคือ ({})",
    ),
    "ar": Phrases(
        "سؤال:",
        "الخيارات:",
        "الإجابة: دعنا نفكر خطوة بخطوة.",
        "فيما يلي أسئلة اختيار من متعدد (مع إجابات) حول {subject}. فكر خطوة بخطوة ثم أنهِ إجابتك بـ '{ans_suffix}' حيث X هو حرف الخيار الصحيح.",
        "أ: دعنا نفكر خطوة بخطوة.",
        "الإجابة هي ({})",
    ),
    "hi": Phrases(
        "प्रश्न:",
        "विकल्प:",
        "उत्तर: चलिए चरण-दर-चरण सोचते हैं।",
        'निम्नलिखित {subject} के बारे में बहुविकल्पीय प्रश्न (उत्तरों के साथ) हैं। चरण-दर-चरण सोचें और फिर अपने उत्तर को "{ans_suffix}" के साथ समाप्त करें जहां X सही विकल्प का अक्षर है।',
        "A: चलिए चरण-दर-चरण सोचते हैं।",
        "उत्तर है ({})",
    ),
    "bn": Phrases(
        "প্রশ্ন:",
        "বিকল্পগুলি:",
        "উত্তর: আসুন ধাপে ধাপে চিন্তা করি।",
        'নিম্নলিখিত {subject} সম্পর্কে বহুনির্বাচনী প্রশ্ন (উত্তরসহ)। ধাপে ধাপে চিন্তা করুন এবং তারপর আপনার উত্তর "{ans_suffix}" দিয়ে শেষ করুন যেখানে X হল সঠিক বিকল্পের অক্ষর।',
        "A: আসুন ধাপে ধাপে চিন্তা করি।",
        "উত্তর হল ({})",
    ),
    "mr": Phrases(
        "प्रश्न:",
        "पर्याय:",
        "उत्तर: चला पायरी पायरीने विचार करू.",
        'खाली {subject} विषयावरील बहुपर्यायी प्रश्न आहेत (उत्तरांसह). कृपया पायरी पायरीने विचार करा आणि आपले उत्तर "{ans_suffix}" असे संपवा, जिथे X हे योग्य पर्यायाचे अक्षर आहे.',
        "A: चला पायरी पायरीने विचार करू.",
        "उत्तर आहे ({})",
    ),
    "ne": Phrases(
        "प्रश्न:",
        "विकल्पहरू:",
        "उत्तर: चरणबद्ध रूपमा सोचौं।",
        'यहाँ {subject} सम्बन्धी बहुवैकल्पिक प्रश्नहरू छन् (उत्तरहरू सहित)। कृपया चरणबद्ध रूपमा सोच्नुहोस् र आफ्नो उत्तर "{ans_suffix}" बाट अन्त्य गर्नुहोस्, जहाँ X सही विकल्पको अक्षर हो।',
        "A: चरणबद्ध रूपमा सोचौं।",
        "उत्तर ({}) हो।",
    ),
    "af": Phrases(
        "Vraag:",
        "Opsies:",
        "Antwoord: Kom ons dink stap vir stap.",
        'Hier is \'n multikeusevraag oor {subject} (met antwoorde). Dink asseblief stap vir stap en eindig jou antwoord met "{ans_suffix}", waar X die letter van die korrekte opsie is.',
        "A: Kom ons dink stap vir stap.",
        "Die antwoord is ({})",
    ),
    "te": Phrases(
        "ప్రశ్న:",
        "ఎంపికలు:",
        "సమాధానం: దశలవారీగా ఆలోచిద్దాం.",
        'క్రింది {subject}కి సంబంధించిన బహుళఎంపిక ప్రశ్న (సమాధానాలతో). దయచేసి దశలవారీగా ఆలోచించి, మీ సమాధానాన్ని "{ans_suffix}"తో ముగించండి, ఇక్కడ X సరైన ఎంపిక అక్షరం.',
        "A: దశలవారీగా ఆలోచిద్దాం.",
        "సమాధానం ({})",
    ),
    "ur": Phrases(
        "سوال:",
        "آپشنز:",
        "جواب: آئیے قدم بہ قدم سوچتے ہیں۔",
        'درج ذیل {subject} کے متعلق ایک متعدد انتخابی سوال ہے (جوابات کے ساتھ)۔ براہ کرم قدم بہ قدم سوچیں، اور پھر اپنے جواب کو "{ans_suffix}" کے ساتھ ختم کریں، جہاں X درست آپشن کا حرف ہے۔',
        "A: آئیے قدم بہ قدم سوچتے ہیں۔",
        "جواب ({}) ہے",
    ),
    "ru": Phrases(
        "Вопрос:",
        "Варианты:",
        "Ответ: Давайте подумаем шаг за шагом.",
        'Ниже приведен вопрос с множественным выбором о {subject} (с ответами). Пожалуйста, размышляйте шаг за шагом, а затем завершите свой ответ с "{ans_suffix}", где X - это буква правильного варианта.',
        "A: Давайте подумаем шаг за шагом.",
        "Ответ - ({})",
    ),
    "id": Phrases(
        "Pertanyaan:",
        "Pilihan:",
        "Jawaban: Mari berpikir langkah demi langkah.",
        'Berikut adalah pertanyaan pilihan ganda tentang {subject} (dengan jawaban). Harap berpikir langkah demi langkah, lalu akhiri jawaban Anda dengan "{ans_suffix}", di mana X adalah huruf pilihan yang benar.',
        "A: Mari berpikir langkah demi langkah.",
        "Jawabannya adalah ({})",
    ),
    "vi": Phrases(
        "Câu hỏi:",
        "Lựa chọn:",
        "Trả lời: Hãy suy nghĩ từng bước một.",
        'Dưới đây là câu hỏi trắc nghiệm về {subject} (kèm đáp án). Vui lòng suy nghĩ từng bước, sau đó kết thúc câu trả lời của bạn bằng "{ans_suffix}", trong đó X là chữ cái của lựa chọn đúng.',
        "A: Hãy suy nghĩ từng bước một.",
        "Câu trả lời là ({})",
    ),
    "cs": Phrases(
        "Otázka:",
        "Možnosti:",
        "Odpověď: Přemýšlejme krok za krokem.",
        'Zde je otázka s výběrem možností k tématu {subject} (s odpovědí). Přemýšlejte prosím krok za krokem a svou odpověď zakončete "{ans_suffix}", kde X je písmeno správné možnosti.',
        "A: Přemýšlejme krok za krokem.",
        "Odpověď je ({})",
    ),
    "hu": Phrases(
        "Kérdés:",
        "Opciók:",
        "Válasz: Gondolkodjunk lépésről lépésre.",
        'Itt van egy feleletválasztós kérdés a(z) {subject} témában (választ is tartalmazza). Kérjük, gondolkodjon lépésről lépésre, és a válaszát a(z) "{ans_suffix}" kifejezéssel fejezze be, ahol X a helyes válasz betűjele.',
        "A: Gondolkodjunk lépésről lépésre.",
        "A válasz ({})",
    ),
    "it": Phrases(
        "Domanda:",
        "Opzioni:",
        "Risposta: Ragioniamo passo dopo passo.",
        'Ecco una domanda a scelta multipla su {subject} (con risposta). Si prega di ragionare passo dopo passo e terminare la risposta con "{ans_suffix}", dove X è la lettera dell\'opzione corretta.',
        "A: Ragioniamo passo dopo passo.",
        "La risposta è ({})",
    ),
    "sr": Phrases(
        "Pitanje:",
        "Opcije:",
        "Odgovor: Razmislimo korak po korak.",
        'Evo pitanja sa višestrukim izborom o {subject} (sa odgovorom). Molimo vas da razmislite korak po korak i završite svoj odgovor sa "{ans_suffix}", gde je X slovo tačne opcije.',
        "A: Razmislimo korak po korak.",
        "Odgovor je ({})",
    ),
    "uk": Phrases(
        "Питання:",
        "Варіанти:",
        "Відповідь: Давайте подумаємо крок за кроком.",
        'Ось запитання з вибором відповідей на тему {subject} (з відповіддю). Будь ласка, подумайте крок за кроком і закінчіть свою відповідь "{ans_suffix}", де X – літера правильного варіанту.',
        "A: Давайте подумаємо крок за кроком.",
        "Відповідь: ({})",
    ),
}
# fmt: off
SUBJECTS: dict[str, tuple[str, ...]] = {
    'en': ('biology', 'business', 'chemistry', 'computer_science', 'economics', 'engineering', 'health', 'history', 'law', 'math', 'other', 'philosophy', 'physics', 'psychology'),
    'ja': ('生物学', 'ビジネス', '化学', 'コンピュータサイエンス', '経済学', '工学', '健康科学', '歴史', '法律', '数学', 'その他', '哲学', '物理学', '心理学'),
    'zh': ('生物学', '商业', '化学', '计算机科学', '经济学', '工程学', '健康', '历史', '法律', '数学', '其他', '哲学', '物理学', '心理学'),
    'ko': ('생물학', '경영학', '화학', '컴퓨터 과학', '경제학', '공학', '건강', '역사', '법률', '수학', '기타', '철학', '물리학', '심리학'),
    'fr': ('biologie', 'commerce', 'chimie', 'informatique', 'économie', 'ingénierie', 'santé', 'histoire', 'droit', 'mathématiques', 'autre', 'philosophie', 'physique', 'psychologie'),
    'de': ('Biologie', 'Wirtschaft', 'Chemie', 'Informatik', 'Ökonomie', 'Ingenieurwesen', 'Gesundheit', 'Geschichte', 'Recht', 'Mathematik', 'Sonstiges', 'Philosophie', 'Physik', 'Psychologie'),
    'es': ('biología', 'negocios', 'química', 'informática', 'economía', 'ingeniería', 'salud', 'historia', 'derecho', 'matemáticas', 'otro', 'filosofía', 'física', 'psicología'),
    'pt': ('biologia', 'negócios', 'química', 'ciência da computação', 'economia', 'engenharia', 'saúde', 'história', 'direito', 'matemática', 'outro', 'filosofia', 'física', 'psicologia'),
    'zu': ('isayensi yezilwane', 'ibhizinisi', 'i-chemistry', 'isayensi yekhompyutha', 'ezomnotho', 'ubunjiniyela', 'ezempilo', 'umlando', 'umthetho', 'izibalo', 'okunye', 'ifilosofi', 'ifiziksi', 'isayensi yengqondo'),
    'sw': ('biolojia', 'biashara', 'kemia', 'sayansi ya kompyuta', 'uchumi', 'uhandisi', 'afya', 'historia', 'sheria', 'hisabati', 'nyingine', 'falsafa', 'fizikia', 'saikolojia'),
    'wo': ('biologi', 'njëriñ', 'simi', 'xam-xam ordinatëer', 'ekonomi', 'injenyëer', 'wergui yaramu', 'taariix', 'yoon', 'matematig', 'yeneen', 'filosofi', 'fisik', 'sikoloji'),
    'yo': ('ìmọ̀ nípa ẹ̀dá ààyè', 'iṣẹ́ òwò', 'kẹ́místrì', 'ìmọ̀ kọ̀mpútà', 'ọ̀rọ̀ ajé', 'ìmọ̀ ìṣeiṣẹ́', 'ìlera', 'ìtàn', 'òfin', 'ìṣirò', 'òmíràn', 'ìmọ̀ ọgbọ́n', 'físíksì', 'ìmọ̀ inú'),
    'th': ('ชีววิทยา', 'ธุรกิจ', 'เคมี', 'วิทยาการคอมพิวเตอร์', 'เศรษฐศาสตร์', 'วิศวกรรมศาสตร์', 'สุขภาพ', 'ประวัติศาสตร์', 'กฎหมาย', 'คณิตศาสตร์', 'อื่นๆ', 'ปรัชญา', 'ฟิสิกส์', 'จิตวิทยา'),
    'ar': ('علم الأحياء', 'الأعمال', 'الكيمياء', 'علوم الكمبيوتر', 'الاقتصاد', 'الهندسة', 'الصحة', 'التاريخ', 'القانون', 'الرياضيات', 'أخرى', 'الفلسفة', 'الفيزياء', 'علم النفس'),
    'hi': ('जीव विज्ञान', 'व्यापार', 'रसायन विज्ञान', 'कंप्यूटर विज्ञान', 'अर्थशास्त्र', 'इंजीनियरिंग', 'स्वास्थ्य', 'इतिहास', 'कानून', 'गणित', 'अन्य', 'दर्शनशास्त्र', 'भौतिकी', 'मनोविज्ञान'),
    'bn': ('জীববিজ্ঞান', 'ব্যবসা', 'রসায়ন', 'কম্পিউটার বিজ্ঞান', 'অর্থনীতি', 'প্রকৌশল', 'স্বাস্থ্য', 'ইতিহাস', 'আইন', 'গণিত', 'অন্যান্য', 'দর্শন', 'পদার্থবিজ্ঞান', 'মনোবিজ্ঞান'),
    'mr': ('जीवशास्त्र', 'व्यवसाय', 'रसायनशास्त्र', 'संगणकशास्त्र', 'अर्थशास्त्र', 'अभियांत्रिकी', 'आरोग्य', 'इतिहास', 'कायदा', 'गणित', 'इतर', 'तत्त्वज्ञान', 'भौतिकशास्त्र', 'मानसशास्त्र'),
    'ne': ('जीवविज्ञान', 'व्यापार', 'रसायनशास्त्र', 'कम्प्युटर विज्ञान', 'अर्थशास्त्र', 'इन्जिनियरिङ', 'स्वास्थ्य', 'इतिहास', 'कानून', 'गणित', 'अन्य', 'दर्शनशास्त्र', 'भौतिकशास्त्र', 'मनोविज्ञान'),
    'af': ('Biologie', 'Besigheid', 'Chemie', 'Rekenaarwetenskap', 'Ekonomie', 'Ingenieurswese', 'Gesondheid', 'Geskiedenis', 'Regte', 'Wiskunde', 'Ander', 'Filosofie', 'Fisika', 'Sielkunde'),
    'te': ('జీవశాస్త్రం', 'వ్యాపారం', 'రసాయన శాస్త్రం', 'కంప్యూటర్ సైన్స్', 'ఆర్థిక శాస్త్రం', 'ఇంజనీరింగ్', 'ఆరోగ్యం', 'చరిత్ర', 'న్యాయశాస్త్రం', 'గణితం', 'ఇతరమైన', 'తత్వవేత్త', 'భౌతిక శాస్త్రం', 'మనోవిజ్ఞానశాస్త్రం'),
    'ur': ('حیاتیات', 'کاروبار', 'کیمیا', 'کمپیوٹر سائنس', 'معاشیات', 'انجینئرنگ', 'صحت', 'تاریخ', 'قانون', 'ریاضی', 'دیگر', 'فلسفہ', 'طبیعیات', 'نفسیات'),
    'ru': ('Биология', 'Бизнес', 'Химия', 'Информатика', 'Экономика', 'Инженерия', 'Здравоохранение', 'История', 'Право', 'Математика', 'Другое', 'Философия', 'Физика', 'Психология'),
    'id': ('Biologi', 'Bisnis', 'Kimia', 'Ilmu Komputer', 'Ekonomi', 'Teknik', 'Kesehatan', 'Sejarah', 'Hukum', 'Matematika', 'Lainnya', 'Filsafat', 'Fisika', 'Psikologi'),
    'vi': ('Sinh học', 'Kinh doanh', 'Hóa học', 'Khoa học máy tính', 'Kinh tế học', 'Kỹ thuật', 'Sức khỏe', 'Lịch sử', 'Luật pháp', 'Toán học', 'Khác', 'Triết học', 'Vật lý học', 'Tâm lý học'),
    'cs': ('biologie', 'obchod', 'chemie', 'informatika', 'ekonomie', 'inženýrství', 'zdraví', 'historie', 'právo', 'matematika', 'ostatní', 'filozofie', 'fyzika', 'psychologie'),
    'hu': ('biológia', 'üzlet', 'kémia', 'informatika', 'közgazdaságtan', 'mérnöki tudományok', 'egészség', 'történelem', 'jog', 'matematika', 'egyéb', 'filozófia', 'fizika', 'pszichológia'),
    'it': ('biologia', 'affari', 'chimica', 'informatica', 'economia', 'ingegneria', 'salute', 'storia', 'diritto', 'matematica', 'altro', 'filosofia', 'fisica', 'psicologia'),
    'sr': ('biologija', 'poslovanje', 'hemija', 'računarstvo', 'ekonomija', 'inženjerstvo', 'zdravlje', 'istorija', 'pravo', 'matematika', 'ostalo', 'filozofija', 'fizika', 'psihologija'),
    'uk': ('біологія', 'бізнес', 'хімія', 'інформатика', 'економіка', 'інженерія', "здоров'я", 'історія', 'право', 'математика', 'інше', 'філософія', 'фізика', 'психологія'),
}
# fmt: on
LANGUAGES = tuple(PHRASES)


def phrases(language: str) -> Phrases:
    """The language's prompt words; a language MMLU-ProX lacks is an error listing its 29."""
    code = get_language(language).code
    if code not in PHRASES:
        raise FormatError(f"MMLU-ProX has no prompt words for language {language!r}; it has {', '.join(LANGUAGES)}")
    return PHRASES[code]


def answer_regex(language: str) -> str:
    """The regex lm-eval's ``custom-extract`` filter applies (its config generator's rule)."""
    code = get_language(language).code
    pattern = phrases(code).answer_phrase.replace("({})", r"\(?([ABCDEFGHIJ])\)?")
    return pattern.lstrip("the").strip() if code == "en" else pattern


def stop_sequences(language: str) -> tuple[str, ...]:
    """lm-eval's ``until`` strings: where a generation is cut."""
    return ("</s>", "Q:", phrases(language).question, "<|im_end|>")


def description(language: str, category: str) -> str:
    """The subject YAML's description: the language's instruction naming the category."""
    words = phrases(language)
    key = category.replace(" ", "_")
    if key not in CATEGORIES:
        raise FormatError(f"MMLU-ProX category {category!r} unknown; choose from {', '.join(CATEGORIES)}")
    name = SUBJECTS[get_language(language).code][CATEGORIES.index(key)]
    return words.description.format(subject=name, ans_suffix=words.answer_phrase.format("X")) + "\n"


def _question_block(row: dict[str, Any], words: Phrases) -> str:
    options = "".join(
        f"{LETTERS[i]}. {row.get(f'option_{i}')}\n" for i in range(len(LETTERS)) if row.get(f"option_{i}") is not None
    )
    return f"{words.question}\n{row['question']}\n{words.options}\n{options}"


def read_mmlu_prox(path: str, language: str, subjects: str = "") -> list[dict[str, Any]]:
    """MMLU-ProX rows of one language as items ``{id, question, exemplar, answer, subject,
    description}``: ``question`` the item's own prompt (zero-shot, without the description),
    ``exemplar`` its few-shot form (None without ``cot_content``), ``answer`` the letter;
    ``subjects`` keeps categories (``computer science`` or ``computer_science``)."""
    words = phrases(language)

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        category = str(row["category"])
        answer = str(row["answer"]).strip()
        if answer not in LETTERS:
            raise ValueError(f"answer {row['answer']!r} is not a letter A-J")
        block = _question_block(row, words)
        cot = row.get("cot_content")
        return {
            "id": str(row.get("question_id", i)),
            "question": block + words.answer_cue,
            "exemplar": block + str(cot).replace(words.exemplar_cue, words.answer_cue) + "\n\n" if cot else None,
            "answer": answer,
            "subject": category,
            "description": description(language, category),
        }

    items = convert_rows(path, "an MMLU-ProX row", convert)
    wanted = [s.strip().replace("_", " ") for s in subjects.split(",") if s.strip()]
    if not wanted:
        return items
    missing = [w for w in wanted if w not in {i["subject"] for i in items}]
    if missing:
        raise FormatError(f"{path}: no MMLU-ProX rows of category {', '.join(missing)}")
    return [i for i in items if i["subject"] in wanted]


def prompt(item: dict[str, Any], exemplars: list[dict[str, Any]], shots: int) -> str:
    """The whole prompt: description, the first ``shots`` exemplars of the item's category
    (lm-eval's ``first_n`` over the processed validation split), the item."""
    same = [e for e in exemplars if e["subject"] == item["subject"]][:shots]
    if len(same) < shots:
        raise FormatError(
            f"item {item['id']}: {shots} few-shot exemplars asked, the few-shot file has {len(same)} "
            f"of category {item['subject']!r}"
        )
    if any(e["exemplar"] is None for e in same):
        raise FormatError(f"item {item['id']}: a few-shot row of {item['subject']!r} has no cot_content")
    return item["description"] + "".join(e["exemplar"] for e in same) + item["question"]


def cut_at_stops(output: str, language: str) -> str:
    """The output before the first stop string (lm-eval cuts at each ``until`` term in turn)."""
    for term in stop_sequences(language):
        output = output.split(term)[0]
    return output


def extract_answer(output: str, language: str) -> str:
    """The letter the first regex match names, or ``[invalid]`` (lm-eval's ``RegexFilter``)."""
    found = re.findall(answer_regex(language), output)
    if not found:
        return FALLBACK
    match = found[0]
    if isinstance(match, tuple):
        match = next((m for m in match if m), FALLBACK)
    return match.strip()


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(prediction: str, answer: str) -> bool:
    """lm-eval's ``exact_match`` with ``ignore_case`` and ``ignore_punctuation``."""
    return prediction.lower().translate(_PUNCTUATION) == answer.lower().translate(_PUNCTUATION)
