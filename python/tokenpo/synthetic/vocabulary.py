"""The words of the embedded task: slot values (with the held-out split) and clause templates.

Data, not logic: :mod:`tokenpo.synthetic.task` builds messages from these tables. Beside the
real values, name-like and numeric slots get generated training values (pseudo-word drugs and
names, random amounts, doses, dates and times): each occurs a few times in the training text at
most, so memorizing slot values cannot fit the training spans and the model has to learn to
copy them, which is what the held-out values of validation and test measure.

No held-out value occurs as whole words in training text: not in a template or fixed sentence,
not inside a training value, not where a training value meets its template's words (so "back
pain" cannot be held out while "the {body_part} pain" fills "upper back");
tests/synthetic/test_synthetic_task.py checks it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CLAUSE_COUNTS",
    "CLOSERS",
    "CONNECTORS",
    "FILLERS",
    "OPENERS",
    "SLOTS",
    "TEMPLATES",
    "SlotValues",
    "whole_words",
]


@dataclass(frozen=True, slots=True)
class SlotValues:
    """The values of one slot, split into training and held-out values."""

    train: tuple[str, ...]
    """Values used by training messages: the real ones not held out, then the generated."""
    held_out: tuple[str, ...]
    """Every 5th real value: used only by validation and test messages."""
    generated: tuple[str, ...] = ()
    """The generated values (the tail of ``train``)."""

    @classmethod
    def split(cls, values: Sequence[str], generated: Sequence[str] = ()) -> SlotValues:
        """Holds out the real ``values`` at indices 4, 9, 14, ...; ``generated`` values are
        training values."""
        if len(set(values) | set(generated)) != len(values) + len(generated):
            raise ValueError(f"duplicate slot values in {values!r} and the generated ones")
        return cls(
            train=tuple(value for index, value in enumerate(values) if index % 5 != 4)
            + tuple(generated),
            held_out=tuple(value for index, value in enumerate(values) if index % 5 == 4),
            generated=tuple(generated),
        )

    @property
    def all(self) -> tuple[str, ...]:
        """Training and held-out values."""
        return self.train + self.held_out


def _values(text: str) -> list[str]:
    return [value.strip() for value in text.split("|")]


_WEEKDAYS = _values("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
_MONTHS = _values(
    "January|February|March|April|May|June|July|August|September|October|November|December"
)
_HOURS = [(8, "am"), (9, "am"), (10, "am"), (11, "am"), (12, "pm"), (1, "pm"), (2, "pm")]
_HOURS += [(3, "pm"), (4, "pm")]

_REAL_VALUES: dict[str, list[str]] = {
    "drug": _values(
        "lisinopril|metformin|atorvastatin|albuterol|sertraline|amoxicillin|amlodipine|"
        "omeprazole|losartan|gabapentin|hydrochlorothiazide|levothyroxine|simvastatin|"
        "montelukast|escitalopram|rosuvastatin|pantoprazole|furosemide|metoprolol|prednisone|"
        "tramadol|bupropion|fluoxetine|citalopram|trazodone|duloxetine|carvedilol|warfarin|"
        "clopidogrel|meloxicam|cyclobenzaprine|tamsulosin|glipizide|pravastatin|venlafaxine|"
        "spironolactone|allopurinol|famotidine|doxycycline|cephalexin|azithromycin|"
        "ondansetron|propranolol|lamotrigine|topiramate|buspirone|hydroxyzine|loratadine|"
        "cetirizine|sumatriptan"
    ),
    "dose": [f"{amount} mg" for amount in (5, 10, 20, 25, 40, 50, 75, 100, 125, 150)]
    + [f"{amount} mg" for amount in (200, 250, 300, 400, 500, 600, 750, 800, 1000)]
    + ["half a tablet", "two tablets", "one capsule"],
    "symptom": _values(
        "headaches|dizziness|nausea|chest pain|toothaches|heartburn|fatigue|insomnia|"
        "night sweats|blurry vision|joint pain|muscle cramps|hives|chills|fevers|coughing|"
        "wheezing|swelling|numbness|tingling|itching|diarrhea|constipation|bloating|"
        "palpitations|shortness of breath|ear pain|neck pain|stomach pain|hot flashes|"
        "anxiety|brain fog|leg cramps|dry mouth|nosebleeds|hair loss|weight gain|"
        "sinus pressure|trouble sleeping|rashes"
    ),
    "duration": [f"since {day}" for day in _WEEKDAYS]
    + _values(
        "for two days|for three days|for four days|for five days|for a week|for two weeks|"
        "for three weeks|for a month|for six weeks|for two months|since last night|"
        "since this morning|since yesterday|since the weekend|since my last visit|"
        "since the holidays|after meals|at bedtime|every morning|on and off"
    ),
    "body_part": _values(
        "left knee|right knee|lower back|upper back|left shoulder|right shoulder|neck|"
        "left ankle|right ankle|left hip|right hip|left wrist|right wrist|left elbow|"
        "right elbow|stomach|chest|left foot|right foot|jaw|left hand|right hand|throat|"
        "left ear|right ear|left eye|right eye|left calf|right calf|tailbone"
    ),
    "doctor": _values(
        "Patel|Nguyen|Garcia|Kim|Johnson|Lee|Martinez|Chen|Smith|Brown|Davis|Lopez|Wilson|"
        "Anderson|Thomas|Taylor|Moore|Jackson|Martin|Thompson|White|Harris|Clark|Lewis|"
        "Robinson|Walker|Young|Allen|King|Wright|Scott|Green|Baker|Adams|Nelson|Hill|"
        "Ramirez|Campbell|Mitchell|Roberts"
    ),
    "patient": _values(
        "Maria|James|Linda|Robert|Susan|Michael|Karen|David|Nancy|Daniel|Lisa|Paul|Sandra|"
        "Mark|Donna|Steven|Carol|Kevin|Sharon|Brian|Laura|George|Amy|Eric|Angela|Jason|"
        "Helen|Frank|Grace|Omar"
    ),
    "lab_test": _values(
        "A1C|lipid panel|blood work|MRI|CT scan|X-ray|ultrasound|EKG|thyroid panel|"
        "urine test|stress test|colonoscopy|mammogram|biopsy|vitamin D level|iron panel|"
        "liver panel|kidney panel|CBC|PSA test|pap smear|sleep study|allergy test|bone scan|"
        "echocardiogram|COVID test|strep test|glucose test|hearing test|eye exam"
    ),
    "specialist": _values(
        "cardiologist|dermatologist|neurologist|orthopedist|podiatrist|urologist|"
        "gastroenterologist|endocrinologist|rheumatologist|allergist|pulmonologist|"
        "oncologist|nephrologist|psychiatrist|chiropractor|physical therapist|nutritionist|"
        "audiologist|eye doctor|surgeon|sleep specialist|pain specialist|ear doctor|"
        "gynecologist|hematologist"
    ),
    "facility": [
        f"{place} {kind}"
        for place, kind in zip(
            _values(
                "Riverside|Lakeview|Mercy|Summit|Cedar|Harbor|Westside|Northgate|Maple|"
                "Bayview|Hillcrest|Sunset|Oakwood|Fairview|Brookside|Highland|Parkside|"
                "Eastgate|Willow|Stonebridge|Clearwater|Redwood|Silverlake|Meadowbrook|Elmhurst"
            ),
            ["Hospital", "Clinic", "Medical Center", "Urgent Care", "Clinic"] * 5,
            strict=True,
        )
    ],
    "form": _values(
        "FMLA form|disability form|work note|school note|jury duty letter|travel letter|"
        "DMV form|camp form|sports physical form|prior authorization|parking placard form|"
        "gym waiver|daycare form|return to work letter|medical release|immunization record|"
        "excuse note|insurance form|accommodation letter|vaccine form"
    ),
    "insurer": _values(
        "Aetna|Cigna|Humana|Medicare|Medicaid|Kaiser|Tricare|Anthem|Oscar|Ambetter|Molina|"
        "Blue Cross|United Healthcare|Blue Shield|Highmark|Wellcare|Oxford|Geisinger|"
        "Harvard Pilgrim|Premera"
    ),
    "amount": [f"${amount}" for amount in range(35, 35 + 40 * 15, 15)],
    "date": [f"{month} {day}" for day in (2, 9, 14, 21, 28) for month in _MONTHS],
    "time": [f"{hour}{minutes} {half}" for hour, half in _HOURS for minutes in ("", ":30")],
    "pharmacy": [
        f"the {name} pharmacy"
        for name in _values(
            "Main Street|Oak Street|Elm Street|Lakeside|Corner|Family|Hometown|Walgreens|CVS|"
            "Rite Aid|Costco|Kroger|Safeway|Walmart|Target|Publix|mail order|hospital|campus|"
            "downtown"
        )
    ],
}

_ONSETS = _values("b|c|d|f|g|h|k|l|m|n|p|r|s|t|v|z|br|ch|cl|dr|fl|gr|pl|sh|st|tr")
_VOWELS = _values("a|e|i|o|u|ai|ea|ia|io|ou")
_CODAS = ["", "", "n", "r", "l", "s", "x", "m", "nd", "st"]
_DRUG_SUFFIXES = _values("pril|statin|olol|azole|mycin|pine|tidine|sartan|zepam|oxacin|triptan")
_FACILITY_KINDS = ("Hospital", "Clinic", "Medical Center", "Urgent Care")
_REAL_WORDS = {
    word.lower() for values in _REAL_VALUES.values() for v in values for word in v.split()
}


def whole_words(values: Iterable[str]) -> re.Pattern[str]:
    """Finds any of ``values`` as whole words: not inside a longer word or number (``10 am``
    is in ``at 10 am`` and in ``1:10 am``, not in ``110 am``)."""
    longest_first = sorted(values, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, longest_first)) + r")(?!\w)")


_REAL_VALUE = whole_words(value for values in _REAL_VALUES.values() for value in values)


def _pseudo_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable non-word that is no word of a real slot value (so no held-out value
    leaks into training text inside a generated one)."""
    while True:
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if word not in _REAL_WORDS:
            return word


def _name(rng: random.Random) -> str:
    return _pseudo_word(rng, rng.randint(2, 3)).capitalize()


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "drug": lambda rng: _pseudo_word(rng, rng.randint(1, 2)) + rng.choice(_DRUG_SUFFIXES),
    "doctor": _name,
    "patient": _name,
    "insurer": lambda rng: _name(rng) + rng.choice(("", " Health", " Care")),
    "facility": lambda rng: f"{_name(rng)} {rng.choice(_FACILITY_KINDS)}",
    "pharmacy": lambda rng: f"the {_name(rng)} pharmacy",
    "amount": lambda rng: f"${rng.randint(12, 2400)}",
    "dose": lambda rng: f"{rng.randint(1, 1200)} mg",
    "date": lambda rng: f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}",
    "time": lambda rng: f"{rng.randint(1, 12)}:{rng.randint(1, 59):02d} {rng.choice(('am', 'pm'))}",
}
GENERATED_PER_SLOT = 200
"""Generated training values per slot that has a generator."""


def _generated(name: str) -> list[str]:
    """``GENERATED_PER_SLOT`` distinct values of slot ``name`` that hold no real value of any
    slot as whole words (so no held-out value leaks into training text inside a generated
    one, as ``10 am`` would inside ``1:10 am``), the same on every import."""
    generator = _GENERATORS.get(name)
    if generator is None:
        return []
    rng = random.Random(f"slot/{name}")
    values: dict[str, None] = {}
    while len(values) < GENERATED_PER_SLOT:
        value = generator(rng)
        if not _REAL_VALUE.search(value):
            values[value] = None
    return list(values)


SLOTS: dict[str, SlotValues] = {
    name: SlotValues.split(values, _generated(name)) for name, values in _REAL_VALUES.items()
}
"""Slot values by slot name."""

# One annotation per clause: a "code subcode" line, then its templates, indented; the
# brackets mark the span, the braces the slots.
_TEMPLATE_TABLE = """
medication refill_request
    can you send a refill of [my {drug}] to {pharmacy}?
    I am almost out of [{drug} {dose}] and need a refill.
    please renew [my {drug} prescription] before {date}.
medication side_effect
    I think [the {drug}] is giving me {symptom}.
    ever since I started [{drug}] I have had {symptom}.
    is [{symptom} from the {drug}] normal?
medication dosage_question
    should I take [{dose} of {drug}] in the morning or at night?
    is it safe to double [my {drug} dose] if I miss one?
    Dr. {doctor} said to change [my {drug} to {dose}], is that right?
medication general_question
    can I take [{drug}] with food?
    is there a generic version of [{drug}]?
    does [{drug}] interact with alcohol?
symptom new_symptom
    I have had [{symptom}] {duration}.
    I started getting [{symptom}] {duration}.
    there is a new [pain in my {body_part}] {duration}.
symptom worsening_symptom
    my [{symptom}] got worse {duration}.
    the [pain in my {body_part}] is getting worse.
    [the {symptom}] is much worse than last week.
symptom improving_symptom
    my [{symptom}] is a lot better now.
    the [pain in my {body_part}] has finally eased.
    good news, [the {symptom}] is almost gone.
symptom follow_up
    I wanted to follow up about [my {symptom}].
    just checking in about [the {body_part} pain] we discussed.
    you asked me to update you on [the {symptom}].
scheduling new_appointment
    I would like to book [an appointment with Dr. {doctor}].
    can I come in [on {date} at {time}]?
    do you have [an opening on {date}]?
scheduling reschedule
    I need to move [my {date} appointment] to another day.
    can we reschedule [my visit with Dr. {doctor}]?
    could you push [my appointment to {time}]?
scheduling cancel
    please cancel [my appointment on {date}].
    I have to cancel [the {time} visit] with Dr. {doctor}.
    I cannot make it [on {date}], please take me off the schedule.
scheduling follow_up
    when should I book [a follow-up with Dr. {doctor}]?
    I need to schedule [a follow-up visit for {date}].
    the front desk said to set up [a recheck on {date}].
billing charge_dispute
    I was billed [{amount} for the {lab_test}] twice.
    the [{amount} charge] from {date} looks wrong.
    I should not owe [{amount} for my {date} visit].
billing insurance_coverage
    does [{insurer}] cover the {lab_test}?
    will [my {insurer} plan] pay for this?
    is the [{lab_test}] covered by {insurer}?
billing payment_plan
    can I pay [{amount} a month] instead?
    I would like to set up [a payment plan for {amount}].
    is it possible to split [the {amount} balance] into payments?
billing general_question
    what is [the {amount} charge] on my statement for?
    who do I call about [my bill from {date}]?
    why did I get [a bill from {facility}]?
test_results result_request
    are [my {lab_test} results] back yet?
    I am still waiting on [the {lab_test}] from {date}.
    when will [the {lab_test} results] be ready?
test_results result_explanation
    what does [my {lab_test} result] mean?
    can you explain [the {lab_test} numbers] to me?
    I do not understand [the {lab_test} report] on the portal.
test_results abnormal_result
    the portal says [my {lab_test} was abnormal].
    my [{lab_test} came back high].
    I saw that [the {lab_test}] was flagged in red.
test_results follow_up
    do I need to repeat [the {lab_test}]?
    should I get [another {lab_test}] before my next visit?
    Dr. {doctor} wanted [a follow-up {lab_test}] in a few weeks.
care_coordination referral_request
    can you refer me to [the {specialist}] at {facility}?
    I need [a referral for the {specialist}].
    my insurance requires [a referral to my {specialist}].
care_coordination records_transfer
    please send [my records to {facility}].
    can you get [my records from {facility}]?
    I need [my chart sent to Dr. {doctor}].
care_coordination form_request
    can you fill out [my {form}]?
    I need [the {form}] signed by {date}.
    please fax [the {form}] to my employer.
care_coordination general_question
    how do I reach [the {specialist}] you mentioned?
    does [{facility}] have my latest notes?
    who is coordinating with [Dr. {doctor}] on my care?
"""


def _parse_templates(table: str) -> dict[tuple[str, str], tuple[str, ...]]:
    templates: dict[tuple[str, str], tuple[str, ...]] = {}
    label = ("", "")  # the last header line
    for line in table.strip().splitlines():
        if line.startswith(" "):
            templates[label] += (line.strip(),)
        else:
            code, subcode = line.split()
            label = (code, subcode)
            templates[label] = ()
    return templates


TEMPLATES = _parse_templates(_TEMPLATE_TABLE)
"""Clause templates by (code, subcode); every span holds at least one slot."""

OPENERS = ("Hi,", "Hello,", "Hi Dr. {doctor},", "Good morning,", "Dear care team,")
FILLERS = (
    "I hope you are doing well.",
    "Sorry to bother you again.",
    "I tried calling the office earlier.",
    "Thank you for your help last time.",
    "It has been a busy week.",
)
CLOSERS = ("Thanks!", "Thank you.", "Thanks, {patient}", "Best, {patient}", "Thank you so much.")
CONNECTORS = ("Also, ", "And ", "One more thing, ")
CLAUSE_COUNTS = ((1, 2, 3, 4), (0.3, 0.35, 0.25, 0.1))
