"""The OpenAPI 3.1 description of the call API, served at `/v1/openapi.json`."""

from __future__ import annotations

from typing import Any

from telebridge.api.bodies import MAX_TEXT_CHARS

__all__ = ["openapi"]

_E164 = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$", "example": "+14155550123"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_LIVE = {
    "type": "object",
    "required": ["call_id", "carrier", "from", "to", "flow", "state"],
    "properties": {
        "call_id": {"type": "string"},
        "request_id": {"type": "string", "description": "the id POST /v1/calls answered"},
        "carrier": {"enum": ["plivo", "vonage"]},
        "from": {"type": "string"},
        "to": {"type": "string"},
        "flow": {"type": "string"},
        "step": {"type": ["string", "null"]},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "state": {"enum": ["queued", "streaming", "ending", "ended"]},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": schema or {"$ref": "#/components/schemas/Error"}}}
    return {"description": description, "content": content}


_ERRORS = {
    "400": _answer("a field is missing, unknown or wrong"),
    "401": _answer("no valid key in Authorization: Bearer"),
    "403": _answer("the API is off: TELEBRIDGE_API_KEY is not set"),
    "413": _answer("the body is over 64 KB"),
    "429": _answer("too many requests from this key; see Retry-After"),
}
_ON_CALL = {
    **_ERRORS,
    "404": _answer("no such call"),
    "409": _answer("the call is not live, or is already being ended"),
}
_ID = [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _strict(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def openapi() -> dict[str, Any]:
    accepted = _answer("accepted", {"type": "object"})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telebridge call API",
            "version": "1",
            "description": "Place calls that run a flow, and act on live calls. Every request "
            "carries Authorization: Bearer <TELEBRIDGE_API_KEY>.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "LiveCall": _LIVE},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/calls": {
                "post": {
                    "summary": "Place a call that runs a flow with variables",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 255},
                            "description": "a retry with the same key places no second call",
                        }
                    ],
                    "requestBody": _body(
                        _strict(
                            {
                                "carrier": {"enum": ["plivo", "vonage"]},
                                "to": _E164,
                                "from": _E164,
                                "flow": {"type": "string"},
                                "vars": {
                                    "type": "object",
                                    "additionalProperties": {"type": ["string", "number"]},
                                },
                            },
                            ["carrier", "to", "from"],
                        )
                    ),
                    "responses": {
                        "201": _answer(
                            "placed; call_id is Plivo's request_uuid or Vonage's call uuid",
                            {
                                "type": "object",
                                "properties": {
                                    "call_id": {"type": "string"},
                                    "carrier": {"type": "string"},
                                    "to": {"type": "string"},
                                    "from": {"type": "string"},
                                    "flow": {"type": "string"},
                                    "status": {"const": "queued"},
                                },
                            },
                        ),
                        **_ERRORS,
                        "422": _answer("the carrier refused the call, or the key was reused"),
                        "502": _answer("the carrier failed; `placed` says if it may have rung"),
                        "503": _answer("the bridge is full or shutting down; see Retry-After"),
                    },
                },
                "get": {
                    "summary": "The calls live on this bridge",
                    "responses": {
                        "200": _answer(
                            "the calls",
                            {
                                "type": "object",
                                "properties": {
                                    "calls": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/LiveCall"},
                                    }
                                },
                            },
                        ),
                        **_ERRORS,
                    },
                },
            },
            "/v1/calls/{call_id}": {
                "get": {
                    "summary": "One call, live or from the call log (as telebridge calls --json)",
                    "parameters": _ID,
                    "responses": {"200": _answer("the call", {"type": "object"}), **_ON_CALL},
                }
            },
            "/v1/calls/{call_id}/say": {
                "post": {
                    "summary": "Speak after the prompt playing, or at once with interrupt",
                    "parameters": _ID,
                    "requestBody": _body(
                        _strict(
                            {
                                "text": {"type": "string", "maxLength": MAX_TEXT_CHARS},
                                "interrupt": {"type": "boolean", "default": False},
                                "voice": {"type": "string"},
                                "speed": {"type": "number", "minimum": 0.5, "maximum": 2.0},
                                "language": {"type": "string"},
                            },
                            ["text"],
                        )
                    ),
                    "responses": {"202": accepted, **_ON_CALL},
                }
            },
            "/v1/calls/{call_id}/hangup": {
                "post": {
                    "summary": "End the call once what is queued has played",
                    "parameters": _ID,
                    "requestBody": _body(_strict({"reason": {"type": "string"}}, [])),
                    "responses": {"202": accepted, **_ON_CALL},
                }
            },
            "/v1/calls/{call_id}/transfer": {
                "post": {
                    "summary": "Transfer the call once what is queued has played",
                    "parameters": _ID,
                    "requestBody": _body(_strict({"to": _E164}, ["to"])),
                    "responses": {"202": accepted, **_ON_CALL},
                }
            },
        },
    }
