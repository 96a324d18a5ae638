"""The analyst's SQL text as sqlglot reads it, and refusals that point into it.

:mod:`gateway.domain.sql` compiles a statement to a plan; this module reads the text (one
statement, a query, parsed by sqlglot's DuckDB dialect) and words every refusal the same way:
what is wrong and the line and column where it starts. Messages never quote the analyst's text
(a literal or a name in it may be data), nor parser internals; they name SQL keywords and the
functions the gateway knows, never a word the analyst chose.

Example:
    >>> source = SqlSource.read("SELECT COUNT(*)\\nFROM bigmart.loyalty ORDER BY 1")
    >>> source.where(source.keyword_offset(frozenset({TokenType.ORDER_BY})))
    ' at line 2, column 22'
"""

from __future__ import annotations

import re
from bisect import bisect_left

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError

from gateway.domain.errors import InvalidRequest, UnsupportedQuery

_DIALECT = Dialect.get_or_raise("duckdb")
_QUERY_STARTS = frozenset({TokenType.SELECT, TokenType.FROM, TokenType.WITH, TokenType.L_PAREN})
_MAX_KEYWORD = 20
_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
}
_ARITHMETIC: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
    exp.IntDiv: "//",
    exp.Pow: "^",
    exp.DPipe: "||",
    exp.Neg: "-",
}
_TOKEN_IN_MESSAGE = re.compile(r" but got <Token .*$", re.DOTALL)
_CLASS_IN_MESSAGE = re.compile(r"<class '(?:\w+\.)*(\w+)'>")
_TOKENIZER_OFFSET = re.compile(r"from \d+:(\d+)$")
_FIRST_WORD = re.compile(r"\s*(\w+|\S)")
_LEAD_REACH = 4  # tokens between a node's opening word and its first located part: CASE WHEN x
_ANALYST_TEXT = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.PARAMETER,
        TokenType.PLACEHOLDER,
    }
)
"""Tokens whose text the analyst chose (names, literals): refusals never quote them."""
_WORD = re.compile(r"\w+")


class SqlSource:
    """One SQL statement: its text, its tokens, and its syntax tree."""

    def __init__(self, text: str, tokens: list[Token], statement: exp.Expr) -> None:
        self.text = text
        self.tokens = tokens
        self.statement = statement
        self._token_starts = [t.start for t in tokens]

    @classmethod
    def read(cls, text: str) -> SqlSource:
        """Tokenise and parse ``text``, which must hold one statement that starts as a query.

        Statements that do not start with SELECT, FROM, WITH or ``(`` are refused from their
        first token, before sqlglot would fall back to parsing (and logging) them as commands.

        Raises:
            InvalidRequest: the text cannot be read or parsed (with the line and column).
            UnsupportedQuery: several statements, or a statement that is not a query.
        """
        try:
            tokens = _DIALECT.tokenize(text)
        except TokenError as err:
            found = _TOKENIZER_OFFSET.search(str(err.__cause__ or ""))
            offset = int(found.group(1)) if found else None
            where = _where(text, offset) if offset is not None and offset < len(text) else ""
            raise InvalidRequest(
                f"sql: cannot read the query{where}: a string, quoted name or comment is not "
                "closed, or a number is malformed"
            ) from None
        statements: list[list[Token]] = [[]]
        for token in tokens:
            if token.token_type == TokenType.SEMICOLON:
                statements.append([])
            else:
                statements[-1].append(token)
        statements = [s for s in statements if s]
        if not statements:
            raise InvalidRequest("sql: the text holds no query")
        first = statements[0][0]
        if len(statements) > 1:
            second = statements[1][0]
            word = _keyword(second)
            raise UnsupportedQuery(
                f"sql: a second statement{f' ({word})' if word else ''} is not supported"
                f"{_where(text, second.start)}: send one SELECT query"
            )
        if first.token_type not in _QUERY_STARTS:
            word = _keyword(first)
            raise UnsupportedQuery(
                f"sql: {f'the {word} statement' if word else 'this statement'} is not supported"
                f"{_where(text, first.start)}: only one SELECT query is accepted"
            )
        try:
            parsed = _DIALECT.parser().parse(tokens, text)
        except ParseError as err:
            raise InvalidRequest(_parse_error_message(tokens, err)) from None
        except RecursionError:
            raise InvalidRequest("sql: the query is nested too deeply to be read") from None
        except SqlglotError:
            raise InvalidRequest("sql: cannot parse the query") from None
        found_statements = [s for s in parsed if s is not None]
        if len(found_statements) != 1:
            raise InvalidRequest("sql: the text must hold exactly one query")
        return cls(text, tokens, found_statements[0])

    # ---- positions ------------------------------------------------------------------------

    def start(self, node: exp.Expr | None) -> int | None:
        """Offset where ``node`` starts in the text (None when it cannot be told).

        sqlglot locates identifiers, literals and some function names only, so the start is the
        first located part of the node, moved back onto the keyword, function name or bracket
        that opens the node (``CASE``, ``MAX(``, ``[``); a node with no located part (``NULL``,
        ``TRUE``, ``?``) is found as a token near its nearest located ancestor.
        """
        if node is None:
            return None
        lead = _lead(node)
        located = self._located(node)
        if located is None:
            anchor, near = node.parent, None
            while anchor is not None and (near := self._located(anchor)) is None:
                anchor = anchor.parent
            if near is None or not lead:
                return None
            index = bisect_left(self._token_starts, near)
            for token in self.tokens[index:]:
                if token.text.upper() == lead:
                    return token.start
            return self._lead_before(index, lead)
        index = bisect_left(self._token_starts, located)
        found = self._lead_before(index, lead) if lead else None
        return found if found is not None else located

    def _located(self, node: exp.Expr) -> int | None:
        starts = [n.meta["start"] for n in node.walk() if "start" in n.meta]
        return min(starts) if starts else None

    def _lead_before(self, index: int, lead: str) -> int | None:
        for i in range(min(index, len(self.tokens) - 1), max(index - _LEAD_REACH, -1), -1):
            if self.tokens[i].text.upper() == lead:
                return self.tokens[i].start
        return None

    def keyword_offset(
        self, types: frozenset[TokenType], before: exp.Expr | None = None
    ) -> int | None:
        """Offset of the keyword that introduces a clause: the last one before ``before``'s
        first located character, or the first in the text when ``before`` has no position."""
        limit = self.start(before)
        hits = [t.start for t in self.tokens if t.token_type in types]
        if limit is None:
            return hits[0] if hits else None
        earlier = [h for h in hits if h < limit]
        return earlier[-1] if earlier else limit

    def leading_words_offset(self, node: exp.Expr, words: frozenset[str]) -> int | None:
        """Offset of the run of ``words`` (e.g. ``LEFT OUTER JOIN``) right before ``node``."""
        start = self.start(node)
        if start is None:
            return None
        index = bisect_left(self._token_starts, start)
        while index > 0 and self.tokens[index - 1].text.upper() in words:
            index -= 1
        return self.tokens[index].start if index < len(self.tokens) else start

    def where(self, offset: int | None) -> str:
        return _where(self.text, offset) if offset is not None else ""

    # ---- refusals -------------------------------------------------------------------------

    def unsupported(
        self, construct: str, node: exp.Expr | None, reason: str = "", offset: int | None = None
    ) -> UnsupportedQuery:
        """``<construct> is not supported at line L, column C: <reason>``."""
        return UnsupportedQuery(
            f"sql: {construct} is not supported{self._at(node, offset)}"
            + (f": {reason}" if reason else "")
        )

    def invalid(
        self, problem: str, node: exp.Expr | None, hint: str = "", offset: int | None = None
    ) -> InvalidRequest:
        """``<problem> at line L, column C: <hint>``."""
        return InvalidRequest(
            f"sql: {problem}{self._at(node, offset)}" + (f": {hint}" if hint else "")
        )

    def _at(self, node: exp.Expr | None, offset: int | None) -> str:
        return self.where(self.start(node) if offset is None else offset)


def _render(node: exp.Expr) -> str:
    try:
        return node.sql(dialect=_DIALECT)
    except (RecursionError, SqlglotError):
        return ""


def _lead(node: exp.Expr) -> str:
    """The first word (or symbol) of the node's SQL, upper-cased: CASE, MAX, NULL, [, ?."""
    found = _FIRST_WORD.match(_render(node))
    return found.group(1).upper() if found else ""


def _keyword(token: Token) -> str | None:
    """The token's text if it is an SQL keyword (DROP, PRAGMA), not a word the analyst chose."""
    word = token.text.upper()
    if token.token_type in _ANALYST_TEXT or not word.isalpha() or len(word) > _MAX_KEYWORD:
        return None
    return word


def _without_analyst_text(description: str, tokens: list[Token]) -> str:
    """The parser's description with every word of the analyst's names and literals masked."""
    chosen = {
        w.lower() for t in tokens if t.token_type in _ANALYST_TEXT for w in _WORD.findall(t.text)
    }
    return _WORD.sub(lambda m: "…" if m.group(0).lower() in chosen else m.group(0), description)


def _where(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f" at line {line}, column {column}"


def _parse_error_message(tokens: list[Token], err: ParseError) -> str:
    if not err.errors:
        return "sql: cannot parse the query"
    first = err.errors[0]
    description = _TOKEN_IN_MESSAGE.sub("", str(first.get("description") or "syntax error"))
    description = _without_analyst_text(_CLASS_IN_MESSAGE.sub(r"\1", description), tokens)
    highlight = str(first.get("highlight") or "")
    line, column = first.get("line"), first.get("col")
    where = ""
    if isinstance(line, int) and isinstance(column, int):
        if highlight and "\n" not in highlight:  # sqlglot reports where the token ends
            column = max(1, column - len(highlight) + 1)
        where = f" at line {line}, column {column}"
    return f"sql: cannot parse the query{where}: {description[:1].lower()}{description[1:]}"


def unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def flatten(node: exp.Expr, op: type[exp.Expr]) -> list[exp.Expr]:
    """The terms of a chain ``a OP b OP (c OP d)``, left to right, without recursion."""
    terms, stack = [], [node]
    while stack:
        current = unparen(stack.pop())
        if isinstance(current, op):
            stack += [current.expression, current.this]
        else:
            terms.append(current)
    return terms


def describe(node: exp.Expr) -> str:
    """How a refusal names a node: 'a subquery', "the comparison '<'", 'the function LOWER()'."""
    if isinstance(node, exp.Subquery | exp.Select | exp.Exists) or (
        isinstance(node, exp.In) and node.args.get("query")
    ):
        return "a subquery"
    if isinstance(node, exp.Window):
        return "a window function (OVER)"
    if type(node) in _COMPARISONS:
        return f"the comparison '{_COMPARISONS[type(node)]}'"
    if type(node) in _ARITHMETIC:
        return f"arithmetic ('{_ARITHMETIC[type(node)]}')"
    if isinstance(node, exp.Cast | exp.TryCast):
        return "CAST"
    if isinstance(node, exp.Null):
        return "NULL"
    if isinstance(node, exp.Boolean):
        return f"the boolean {node.sql()}"
    if isinstance(node, exp.Literal):
        return "a literal"
    if isinstance(node, exp.Is):
        return "IS [NOT] NULL"
    if isinstance(node, exp.Placeholder):
        return "a query parameter"
    if isinstance(node, exp.Column):
        return "a column"
    if isinstance(node, exp.Case):
        return "CASE"
    if isinstance(node, exp.Anonymous):
        return "a function the gateway does not know"
    if isinstance(node, exp.Func):
        return f"the function {function_name(node)}()"
    return node.key.upper()


def function_name(node: exp.Expr) -> str:
    """The SQL name of a function sqlglot knows; an unknown one's name is the analyst's word."""
    if isinstance(node, exp.Anonymous):
        return "UNKNOWN"
    return node.sql_name() if isinstance(node, exp.Func) else node.key.upper()
