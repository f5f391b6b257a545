"""The service's routes, one module per area, each route a module-level function:
:mod:`.health`, :mod:`.users`, :mod:`.items`, :mod:`.events`, :mod:`.recommendations`,
:mod:`.admin`, :mod:`.experiments`. Each module's ``add_routes`` adds its routes to an
:class:`~fastapi.APIRouter` (the app's own, in
:func:`~tastebud.service.app.create_app`, in this order: the order of the OpenAPI
document). :mod:`.deps` holds what they share: the per-app :class:`~.deps.Context`,
reached through ``request.app.state``, and the key checks."""
