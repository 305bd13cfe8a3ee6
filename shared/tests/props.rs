//! Property tests of the pipeline geometry check: any steps on any size either plan to
//! an image inside the limits, or are refused with a reason.

use pixmill_shared::{ChannelOrder, Fit, FlipDirection, Limits, Step, plan};
use proptest::prelude::*;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            proptest::option::of(0u32..20_000),
            proptest::option::of(0u32..20_000),
            prop_oneof![Just(Fit::Cover), Just(Fit::Contain), Just(Fit::Fill)]
        )
            .prop_map(|(width, height, fit)| Step::Resize { width, height, fit }),
        (0u32..5000, 0u32..5000, 0u32..5000, 0u32..5000).prop_map(|(x, y, width, height)| {
            Step::Crop {
                x,
                y,
                width,
                height,
            }
        }),
        any::<f32>().prop_map(|sigma| Step::Blur { sigma }),
        (any::<f32>(), any::<f32>()).prop_map(|(low, high)| Step::Edges { low, high }),
        Just(Step::Swap {
            order: ChannelOrder::Gbr
        }),
        Just(Step::Grayscale {}),
        any::<u16>().prop_map(|degrees| Step::Rotate { degrees }),
        Just(Step::Flip {
            direction: FlipDirection::Vertical
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn planned_sizes_respect_the_limits(
        steps in proptest::collection::vec(step(), 0..25),
        width in 0u32..70_000,
        height in 0u32..70_000,
    ) {
        let limits = Limits::default();
        if let Ok((w, h)) = plan(&steps, width, height, &limits) {
            prop_assert!(w >= 1 && h >= 1);
            prop_assert!(u64::from(w) * u64::from(h) <= limits.max_pixels);
            prop_assert!(steps.len() <= limits.max_steps);
        }
    }
}
