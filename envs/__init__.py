"""The simulated world and its Gymnasium environments (layer 1 of DESIGN.md).

Importing `envs` registers `OneRec/Session-v0` (single user, `envs.session_env`) with a
native vector entry point (`envs.vector_env`), and `OneRec/Days-v0` (one user's days: sessions,
gaps, returns; `envs.days_env`) likewise, so all of these work:

    gymnasium.make("OneRec/Session-v0")
    gymnasium.make_vec("OneRec/Session-v0", num_envs=1024)
    gymnasium.make("OneRec/Days-v0")
    gymnasium.make_vec("OneRec/Days-v0", num_envs=1024)

Entry points are strings, so this import stays cheap: nothing below is loaded until an
environment is made.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "OneRec/Session-v0"
DAYS_ENV_ID = "OneRec/Days-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="envs.session_env:OneRecSession",
        vector_entry_point="envs.vector_env:OneRecVectorEnv",
        max_episode_steps=100,
    )

if DAYS_ENV_ID not in registry:
    register(
        id=DAYS_ENV_ID,
        entry_point="envs.days_env:OneRecDays",
        vector_entry_point="envs.days_env:OneRecDaysVectorEnv",
    )
