"""Bike-sharing stand-in (SYNTHETIC): hourly rentals over two years from the 12 UCI inputs, a regression on counts.

The thesis's bike data is the UCI bike-sharing hourly file (Fanaee-T and Gama 2013; Capital
Bikeshare, Washington DC, 2011-2012), which no installed package ships, and loaders here may not
download. This generator mimics its layout and scale instead; numbers on it are comparable with
the thesis's (RMSE about 34-130 bikes/hour) in scale only, not in value.

Rows: one per hour from 2011-01-01 00:00 to 2012-12-31 23:00 (17,544 hours); like the UCI file,
which misses some hours, `n_rows` (default 17,379, the UCI count) hours are kept, chosen at
random and kept in time order. Inputs, in the UCI order and coding (`FEATURES`):
season (1-4, quarters starting 21 Dec, 21 Mar, 21 Jun, 23 Sep), yr (0 = 2011), mnth (1-12),
hr (0-23), holiday (the 2011-2012 DC public holidays), weekday (0 = Sunday), workingday,
weathersit (1 clear ... 4 heavy rain; a persistent hourly Markov chain: 65 / 25 / 10 / 0.02 % of
hours), temp ((C + 8) / 47: seasonal + diurnal cycle + weather-system anomalies), atemp (felt
temperature, (C + 16) / 66), hum (fraction, highest before dawn and in rain), windspeed
(km/h / 67, gamma distributed).

Target, rentals in the hour: Poisson(1000 tanh(lambda g / 1000)), where g is gamma noise (mean
1, sd 0.25), 1,000 rides/hour is the fleet's capacity (the UCI maximum is 977), and
lambda = scale * growth * profile * temperature * weather * humidity * wind:
- profile: an hourly table (`_WORKDAY_PROFILE`, `_FREEDAY_PROFILE`): on working days commuting
  peaks at 8:00 and 17:00-18:00 over a midday plateau; on weekends and holidays one broad
  afternoon hump and busier late nights; few rides before dawn;
- growth: exp(0.49 * years since start) (the UCI 2012 mean is about 1.63 x 2011's);
- temperature: 0.45 + 0.55 exp(-((C - 26) / 13)^2); weather: x1 / 0.88 / 0.45 / 0.2 for
  weathersit 1-4; humidity: 1 - 0.5 max(hum - 0.6, 0); wind: 1 - 0.4 windspeed.
The counts land on the UCI scale (17,379 rows: mean 190, sd 179, median 144, max 1,019; UCI:
190, 181, 142, 977). The whole file is drawn from a fixed internal seed; `seed` only picks the
split. For scale: scikit-learn's gradient boosting reaches a validation RMSE of about 57
bikes/hour on the default split, a linear regression about 130.

Split: `split="random"` (default) holds out a seeded random `val_fraction` (0.2) of the hours.
Neighbouring hours are alike, so this is optimistic beside `split="time"`, which holds out the
last `val_fraction` of the timeline (the same for every seed). The thesis does not say which it used.
Normalisation: every input, categorical codes included (the thesis's model takes 12 numbers),
standardised with the training split's mean and standard deviation (an input constant on the
training split is only centred). The target stays in bikes per hour, y of shape (n, 1), so RMSE
is in bikes/hour.
"""

from __future__ import annotations

import numpy as np
import torch

from loopnets.data.split import Split

FEATURES = (
    "season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit",
    "temp", "atemp", "hum", "windspeed",
)
SPLITS = ("random", "time")
HOURS = 731 * 24  # 2011-01-01 00:00 .. 2012-12-31 23:00
UCI_ROWS = 17_379
_FILE_SEED = 17_379  # fixed: the synthetic "file" is the same for every split seed
# Washington DC public holidays 2011-2012 (federal holidays, observed dates, and DC Emancipation Day).
_HOLIDAYS = np.array(
    [
        "2011-01-17", "2011-02-21", "2011-04-15", "2011-05-30", "2011-07-04", "2011-09-05",
        "2011-10-10", "2011-11-11", "2011-11-24", "2011-12-26",
        "2012-01-02", "2012-01-16", "2012-02-20", "2012-04-16", "2012-05-28", "2012-07-04",
        "2012-09-03", "2012-10-08", "2012-11-12", "2012-11-22", "2012-12-25",
    ],
    dtype="datetime64[D]",
)
_WEATHER = np.array([0.66, 0.2595, 0.08, 0.0005])  # long-run share of weathersit 1..4
_WEATHER_EFFECT = np.array([1.0, 0.88, 0.45, 0.2])
# fmt: off
_WORKDAY_PROFILE = np.array([0.07, 0.03, 0.015, 0.01, 0.01, 0.05, 0.2, 0.57, 0.91, 0.46, 0.26, 0.3,
                             0.38, 0.37, 0.34, 0.37, 0.55, 1.0, 0.93, 0.67, 0.48, 0.35, 0.27, 0.17])
_FREEDAY_PROFILE = np.array([0.18, 0.13, 0.095, 0.048, 0.015, 0.015, 0.038, 0.086, 0.22, 0.38, 0.53, 0.65,
                             0.73, 0.74, 0.72, 0.71, 0.7, 0.63, 0.55, 0.46, 0.34, 0.3, 0.25, 0.19])
# fmt: on
_SCALE = 535.0  # sets the mean count near the UCI file's 189.5
_CAPACITY = 1000.0  # rides per hour the fleet can serve at most (UCI maximum: 977)


def load_bike(
    seed: int = 0,
    n_rows: int = UCI_ROWS,
    split: str = "random",
    val_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Synthetic hourly bike rentals as x: (n, 12) float standardised; y: (n, 1) float bikes/hour.

    Args:
        seed: shuffles the random split (the generated file does not depend on it).
        n_rows: hours kept out of the 17,544 in two years, at least 10.
        split: "random" (seeded) or "time" (last `val_fraction` of the timeline held out).
        val_fraction: share of the rows held out for validation, in (0, 1).
        dtype: floating dtype of x and y.
    """
    if not 10 <= n_rows <= HOURS:
        raise ValueError(f"bike n_rows must be between 10 and {HOURS} (hours in 2011-2012); got {n_rows}")
    if split not in SPLITS:
        raise ValueError(f"bike split must be one of {SPLITS}; got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"bike val_fraction must lie strictly between 0 and 1; got {val_fraction}")
    x, y = _generate(n_rows)  # (n_rows, 12), (n_rows,) in time order
    n_val = int(np.ceil(val_fraction * n_rows))
    if split == "time":
        train, val = np.arange(n_rows - n_val), np.arange(n_rows - n_val, n_rows)
    else:
        order = np.random.default_rng(seed).permutation(n_rows)
        train, val = order[n_val:], order[:n_val]
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)  # e.g. holiday absent from a small training split
    to_x = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype)
    to_y = lambda a: torch.as_tensor(a[:, None], dtype=dtype)
    return Split(to_x(x[train]), to_y(y[train]), to_x(x[val]), to_y(y[val]), (), "regression")


def _generate(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The model in the module docstring: inputs (n_rows, 12) in UCI coding and counts (n_rows,)."""
    rng = np.random.default_rng(_FILE_SEED)
    hour = np.arange(HOURS)
    day = hour // 24
    hr = hour % 24
    date = np.datetime64("2011-01-01") + day  # datetime64[D]
    year = date.astype("datetime64[Y]").astype(int) + 1970
    month = date.astype("datetime64[M]").astype(int) % 12 + 1
    month_day = (date - date.astype("datetime64[M]")).astype(int) + 1
    doy = (date - date.astype("datetime64[Y]")).astype(int)
    weekday = (day + 6) % 7  # 2011-01-01 was a Saturday; 0 = Sunday as in the UCI file
    holiday = np.isin(date, _HOLIDAYS).astype(float)
    workingday = ((weekday >= 1) & (weekday <= 5) & (holiday == 0)).astype(float)
    md = month * 100 + month_day
    season = np.select([md < 321, md < 621, md < 923, md < 1221], [1, 2, 3, 4], 1)

    # Weather: a persistent hourly Markov chain whose long-run shares are _WEATHER.
    transition = 0.92 * np.eye(4) + 0.08 * _WEATHER  # rows sum to 1; stationary law _WEATHER
    uniform = rng.random(HOURS)
    weathersit = np.empty(HOURS, dtype=int)
    state = 0
    for i in range(HOURS):
        state = int(np.searchsorted(np.cumsum(transition[state]), uniform[i]))
        weathersit[i] = min(state, 3)
    weathersit += 1

    # Temperature (C): seasonal mean + day-to-day weather systems (AR(1)) + diurnal cycle + rain cooling.
    anomaly = np.empty(731)
    anomaly[0] = rng.normal(0.0, 4.0)
    for d in range(1, 731):
        anomaly[d] = 0.7 * anomaly[d - 1] + rng.normal(0.0, 4.0 * np.sqrt(1 - 0.7**2))
    celsius = (
        14.5 - 12.0 * np.cos(2 * np.pi * (doy - 20) / 365.25) + anomaly[day]
        + 4.0 * np.cos(2 * np.pi * (hr - 15) / 24) - 1.5 * (weathersit >= 3) + rng.normal(0.0, 0.5, HOURS)
    )
    wind_kmh = rng.gamma(2.5, 5.0, HOURS)
    hum = np.clip(
        0.62 + 0.12 * np.cos(2 * np.pi * (hr - 5) / 24) + np.repeat(rng.normal(0.0, 0.1, 731), 24)
        + 0.15 * (weathersit == 3) + 0.25 * (weathersit == 4) + rng.normal(0.0, 0.03, HOURS),
        0.1, 1.0,
    )
    felt = celsius + 0.3 * (celsius - 15) * (hum - 0.5) - 0.15 * wind_kmh * (celsius < 15) + rng.normal(0.0, 1.0, HOURS)
    temp = np.clip((celsius + 8) / 47, 0.0, 1.0)
    atemp = np.clip((felt + 16) / 66, 0.0, 1.0)
    windspeed = np.clip(wind_kmh / 67, 0.0, 1.0)

    # Hourly shape of demand (relative; peak 1): commuting peaks on working days, a broad
    # afternoon hump and late nights on weekends and holidays.
    profile = np.where(workingday == 1, _WORKDAY_PROFILE[hr], _FREEDAY_PROFILE[hr])
    rate = (
        _SCALE * np.exp(0.49 * day / 365.25) * profile
        * (0.45 + 0.55 * np.exp(-(((celsius - 26) / 13) ** 2)))
        * _WEATHER_EFFECT[weathersit - 1]
        * (1 - 0.5 * np.maximum(hum - 0.6, 0.0))
        * (1 - 0.4 * windspeed)
    )
    busy = rate * rng.gamma(16.0, 1 / 16.0, HOURS)  # hourly demand: noise of mean 1, sd 0.25
    count = rng.poisson(_CAPACITY * np.tanh(busy / _CAPACITY)).astype(float)  # the fleet saturates

    x = np.stack(
        [season, year - 2011, month, hr, holiday, weekday, workingday, weathersit, temp, atemp, hum, windspeed], 1
    ).astype(float)
    keep = np.sort(rng.choice(HOURS, n_rows, replace=False))
    return x[keep], count[keep]
