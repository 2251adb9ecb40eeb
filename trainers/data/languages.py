"""Language codes as the data name them: an ISO 639 language, lowercase (`de`; two letters from ISO 639-1, or three
from ISO 639-2/3 such as `ast`), optionally a region (`pt_BR`) or a script (`sr_Latn`). Codes are case-sensitive:
`DE` is not `de`, and would otherwise become a language of its own beside it."""

import re

# ISO 639-1: every two-letter language code.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo es
et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki
kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no
nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te
tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())
_CODE = re.compile(r"^(?P<language>[a-z]{2,3})(_(?:[A-Z]{2}|[A-Z][a-z]{3}))?$")


def language_code_problem(code) -> str | None:
    """What is wrong with a language code, or None for a good one."""
    if not isinstance(code, str):
        return f"{code!r} is not a language code"
    match = _CODE.match(code)
    if match is None:
        lowered = code.split("_")[0].lower()
        hint = f"; did you mean {lowered!r}?" if lowered in ISO_639_1 else ""
        return (f"{code!r} is not a language code of the form de, ast, pt_BR or sr_Latn (lowercase language, then "
                f"an optional _REGION or _Script){hint}")
    if len(match["language"]) == 2 and match["language"] not in ISO_639_1:
        return f"{code!r} is no ISO 639-1 language"
    return None
